"""``report.md`` with PNG plots of one run (matplotlib, headless Agg backend), and ``report.html``.

Scatter plots number their points and list the numbers in a key outside the axes (labels never print
over each other: each number is placed greedily where it overlaps no other label or marker); legends sit
outside the data; exported variants keep their torch source visible (same colour per model, a distinct
marker and line style per format/precision, small x offsets); the certified plot marks the largest
certifiable radius.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from robustbench_cnn.contract.manifest import read_run_manifest
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.contract.verdicts import deciding
from robustbench_cnn.corruptions import family
from robustbench_cnn.report.html import write_html
from robustbench_cnn.report.leaderboard import certify_limits, leaderboard, pareto_front, variant_label
from robustbench_cnn.report.summary import render as render_summary

MARKERS = {("torch", "none"): ("o", "-"), ("onnx", "none"): ("s", "--"), ("onnx", "int8"): ("^", ":"),
           ("tflite", "none"): ("D", "-."), ("tflite", "int8"): ("v", ":")}  # fmt: skip
OFFSETS = [(4, 4), (4, -11), (-11, 4), (-11, -11), (8, -3), (-15, -3), (-3, 9), (-3, -16), (14, 8), (14, -14),
           (-20, 8), (-20, -14), (0, 18), (0, -24), (22, -3), (-28, -3)]  # fmt: skip


def _label(r: pd.Series) -> str:
    return variant_label(r)


def _style(fmt: str, compression: str) -> tuple[str, str]:
    """(marker, line style) of a format/precision; torch-side compressions (prune, kd) keep the torch style."""
    precision = "int8" if "int8" in str(compression) else "none"
    return MARKERS.get((str(fmt), precision), ("P", "-."))


def _figure(title: str, xlabel: str, ylabel: str, width: float = 8.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, 4.5), dpi=110)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig, ax, path: Path) -> str:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def unreliable_models(df: pd.DataFrame) -> set[str]:
    checks = deciding(df)
    return set(checks.loc[checks.value < 1, "model"])


def _colours(models: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(dict.fromkeys(models))}


def robust_vs_eps(df: pd.DataFrame, out: Path) -> list[str]:
    """One plot per (attack, norm) with >= 2 eps: one line per variant, a model's variants in its colour."""
    files = []
    flagged = unreliable_models(df)
    robust = df[(df.metric == "robust_acc") & (df.attack != "worst_case")]
    colour = _colours(list(robust.model))
    for (attack, norm), sub in robust.groupby(["attack", "norm"]):
        if sub.eps.nunique() < 2:
            continue
        fig, ax = _figure(f"Robust accuracy under {attack} ({norm})", f"eps ({norm}, images in [0, 1])",
                          "robust accuracy (%)", width=9.5)  # fmt: skip
        variants = list(sub.assign(variant=sub.apply(_label, axis=1)).groupby("variant", sort=False))
        span = float(sub.eps.max() - sub.eps.min()) or 1.0
        for i, (variant, m) in enumerate(variants):
            m = m.sort_values("eps")  # one line per model variant (torch, each export)
            marker, style = _style(m.format.iloc[0], m.compression.iloc[0])
            exported = m.format.iloc[0] != "torch"
            shift = (i % 5 - 2) * 0.012 * span if exported else 0.0  # exports step aside from their source
            label = f"{variant} (evaluation unreliable)" if m.model.iloc[0] in flagged else variant
            ax.plot(m.eps + shift, m.value * 100, style, marker=marker, color=colour[m.model.iloc[0]], label=label,
                    markersize=4 if exported else 6, linewidth=1.0 if exported else 1.8, alpha=0.9,
                    zorder=2 if exported else 3)  # fmt: skip
        ax.set_ylim(-2, 102)
        files.append(_save(fig, ax, out / f"robust_{attack}_{norm}.png"))
    return files


def corruption_vs_severity(df: pd.DataFrame, out: Path) -> list[str]:
    """One plot per corruption family (noise, blur, weather, digital) the run measured: accuracy against
    severity, averaged over the family's corruptions, one line per variant (exports in their model's
    colour with their own marker: which build loses what under which corruption)."""
    rows = df[df.metric == "corruption_acc"]
    if rows.empty:
        return []
    colour, flagged, files = _colours(list(rows.model)), unreliable_models(df), []
    for fam, sub in rows.assign(family=rows.attack.map(family)).groupby("family", sort=False):
        names = ", ".join(sorted(sub.attack.unique()))
        fig, ax = _figure(f"Accuracy under {fam} corruptions ({names})", "severity", "accuracy (%)", width=9.5)
        mean = sub.assign(variant=sub.apply(_label, axis=1)).groupby(["variant", "eps"], sort=False)
        for variant, m in mean.agg(value=("value", "mean"), model=("model", "first"), format=("format", "first"),
                                   compression=("compression", "first")).reset_index().groupby("variant"):  # fmt: skip
            marker, style = _style(m.format.iloc[0], m.compression.iloc[0])
            label = f"{variant} (evaluation unreliable)" if m.model.iloc[0] in flagged else variant
            ax.plot(m.eps, m.value * 100, style, marker=marker, color=colour[m.model.iloc[0]], label=label)
        ax.set_xticks(sorted(sub.eps.unique()))
        ax.set_ylim(-2, 102)
        files.append(_save(fig, ax, out / f"corruption_{fam}.png"))
    return files


def certified_vs_radius(df: pd.DataFrame, out: Path, manifest: Mapping[str, Any] | None = None) -> list[str]:
    """Certified accuracy per measured radius; a vertical line at each model's largest certifiable radius."""
    cert = df[df.metric == "certified_acc"]
    if cert.empty:
        return []
    fig, ax = _figure("Certified accuracy (randomized smoothing)", "L2 radius", "certified accuracy (%)")
    limits = certify_limits(manifest or {})
    colour = _colours(list(cert.model))
    for model, m in cert.groupby("model", sort=False):
        m = m.sort_values("eps")
        limit = limits.get(model, float("inf"))
        inside, beyond = m[m.eps <= limit], m[m.eps > limit]
        ax.plot(inside.eps, inside.value * 100, marker="o", label=model, color=colour[model])  # measured radii only
        if not beyond.empty:  # not connected: past the limit 0 is what CERTIFY returns, not a measured collapse
            ax.plot(beyond.eps, beyond.value * 100, linestyle="", marker="o", markerfacecolor="none",
                    color=colour[model], label=f"{model}: beyond its certifiable limit")  # fmt: skip
        if model in limits:
            stats = (manifest or {})["models"][model]["certify"]
            r = limits[model]
            ax.axvline(r, color=colour[model], linestyle=":", linewidth=1.2)
            ax.axvspan(r, max(float(cert.eps.max()), r) * 1.05, color="0.85", alpha=0.4, zorder=0)
            ax.annotate(f"certifiable limit {r:.2f}\n(σ {stats['sigma']:g}, n {stats['n']:,}, α {stats['alpha']:g});"
                        "\nlarger radii read 0 by construction", (r, 55), xytext=(5, 0), textcoords="offset points",
                        fontsize=7, color="0.25")  # fmt: skip
    ax.set_ylim(-2, 102)
    return [_save(fig, ax, out / "certified.png")]


def place_labels(ax, xs: list[float], ys: list[float], texts: list[str], draw: bool = True) -> list[Any]:
    """Write each point's text at the first offset (points) whose box overlaps no placed label or marker.

    Call after the figure's layout is final: boxes are measured in display pixels."""
    from matplotlib.transforms import offset_copy

    fig = ax.figure
    if draw:  # fixes the layout (transforms); once per figure is enough
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pixels = ax.transData.transform(list(zip(xs, ys, strict=True))) if xs else []
    taken = [(px - 4, py - 4, px + 4, py + 4) for px, py in pixels]
    placed = []
    for x, y, text in zip(xs, ys, texts, strict=True):
        for dx, dy in OFFSETS:
            where = offset_copy(ax.transData, fig=fig, x=dx, y=dy, units="points")
            label = ax.text(x, y, text, transform=where, fontsize=7, fontweight="bold", zorder=4)
            b = label.get_window_extent(renderer)
            if not any(b.x0 < t[2] and t[0] < b.x1 and b.y0 < t[3] and t[1] < b.y1 for t in taken):
                break
            if (dx, dy) != OFFSETS[-1]:
                label.remove()
        taken.append((b.x0, b.y0, b.x1, b.y1))
        placed.append(label)
    return placed


def _scatter_panel(ax, pts: pd.DataFrame, y: str, cost: str, colour: dict[str, Any]) -> None:
    for _, r in pts.iterrows():
        marker, _ = _style(r.format, r.compression)
        face = "none" if r.unreliable else colour[r.model]
        ax.scatter([r[cost]], [r[y]], marker=marker, s=36, facecolors=face, edgecolors=colour[r.model], zorder=3)
    usable = pts[~pts.unreliable] if y == "robust" else pts  # an unreliable robust number defines no front
    front = pareto_front(usable[[cost, y]].dropna(), cost, y)
    ax.step(front[cost], front[y], "r--", where="post", linewidth=1, zorder=2, label="Pareto front")
    ax.scatter(front[cost], front[y], s=110, facecolors="none", edgecolors="r", linewidths=1, zorder=2)


def accuracy_vs_cost(df: pd.DataFrame, out: Path, manifest: Mapping[str, Any] | None = None) -> list[str]:
    """Clean and robust (worst case at the main eps) accuracy vs p50 latency and vs size, each with its
    Pareto front; points are numbered, the key lists number, variant and verdict outside the axes."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    board, tm = leaderboard(df, manifest or {})
    board = board.assign(
        clean=board.clean * 100,
        robust=board.robust * 100,
        size=board.size_bytes / 1024,
        unreliable=board.verdict.str.startswith("UNRELIABLE"),
    )
    board["num"] = range(1, len(board) + 1)
    colour = _colours(list(board.model))
    batch = board.latency_batch.dropna()
    specs = [("latency", "p50_ms", f"p50 latency at batch {int(batch.iloc[0])} (ms, log)")] if not batch.empty else []
    specs.append(("size", "size", "model size (KiB, log)"))
    files = []
    for name, cost, xlabel in specs:
        pts = board.dropna(subset=[cost, "clean"])
        if pts.empty:
            continue
        panels = [("clean", "clean accuracy (%)")]
        if pts.robust.notna().any():
            panels.append(("robust", f"{tm.robust_header()} (%, worst case)"))
        key_in = 3.4
        fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels) + key_in, 4.8), dpi=110, squeeze=False)
        for ax, (y, ylabel) in zip(axes[0], panels, strict=True):
            _scatter_panel(ax, pts.dropna(subset=[y]), y, cost, colour)
            ax.set_xscale("log")
            ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel.split(' (')[0]} vs {name}")
            ax.grid(True, which="both", alpha=0.25)
            ax.margins(x=0.12, y=0.1)
        key = [Line2D([], [], linestyle="", marker=_style(r.format, r.compression)[0], color=colour[r.model],
                      markerfacecolor="none" if r.unreliable else colour[r.model],
                      label=f"{r.num:>2}  {r.variant}" + ("  (UNRELIABLE)" if r.unreliable else ""))
               for r in pts.itertuples()]  # fmt: skip
        key.append(
            Line2D(
                [],
                [],
                color="r",
                linestyle="--",
                marker="o",
                markerfacecolor="none",
                label="Pareto front (robust: reliable variants only)",
            )
        )
        data_share = 1 - key_in / (5.0 * len(panels) + key_in)  # the key starts right of the panels, grows right
        fig.legend(handles=key, loc="upper left", bbox_to_anchor=(data_share + 0.005, 0.98), fontsize=7,
                   frameon=False, title="key (hollow: evaluation unreliable)", title_fontsize=7)  # fmt: skip
        fig.tight_layout(rect=(0, 0, data_share, 1))
        for i, (ax, (y, _)) in enumerate(zip(axes[0], panels, strict=True)):  # after the layout: placed in pixels
            sub = pts.dropna(subset=[y])
            place_labels(ax, list(sub[cost]), list(sub[y]), [str(n) for n in sub.num], draw=i == 0)
        fig.savefig(out / f"accuracy_vs_{name}.png", bbox_inches="tight")  # a long key widens the canvas
        plt.close(fig)
        files.append(f"accuracy_vs_{name}.png")
    return files


def write_report(run_dir: Path) -> Path:
    """Write ``report.md``, its PNGs and ``report.html`` into ``run_dir``; returns the Markdown report's path."""

    df = read_csv(run_dir / "results.csv")
    manifest = read_run_manifest(run_dir / "manifest.json")
    plots = robust_vs_eps(df, run_dir) + certified_vs_radius(df, run_dir, manifest)
    plots += corruption_vs_severity(df, run_dir) + accuracy_vs_cost(df, run_dir, manifest)
    lines = [render_summary(df, manifest).rstrip(), "", "## Plots", ""]
    lines += [f"![{p.removesuffix('.png')}]({p})" for p in plots]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    write_html(df, manifest, run_dir)
    return path
