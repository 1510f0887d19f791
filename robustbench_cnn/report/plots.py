"""``report.md`` with PNG plots of one run (matplotlib, headless Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from robustbench_cnn.report.summary import render as render_summary
from robustbench_cnn.suite.results import read_csv


def _label(r: pd.Series) -> str:
    parts = [r["model"]] + [str(r[c]) for c in ("compression", "format", "runtime") if r[c] not in ("none", "torch")]
    return " / ".join(parts)


def _figure(title: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig, ax, path: Path) -> str:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def unreliable_models(df: pd.DataFrame) -> set[str]:
    checks = df[df.metric.str.startswith("check_")]
    return set(checks.loc[checks.value < 1, "model"])


def robust_vs_eps(df: pd.DataFrame, out: Path) -> list[str]:
    files = []
    flagged = unreliable_models(df)
    robust = df[(df.metric == "robust_acc") & (df.attack != "worst_case")]
    for (attack, norm), sub in robust.groupby(["attack", "norm"]):
        if sub.eps.nunique() < 2:
            continue
        fig, ax = _figure(f"Robust accuracy under {attack} ({norm})", f"eps ({norm}, images in [0, 1])",
                          "robust accuracy (%)")  # fmt: skip
        for variant, m in sub.assign(variant=sub.apply(_label, axis=1)).groupby("variant", sort=False):
            m = m.sort_values("eps")  # one line per model variant (torch, each export)
            unreliable = m.model.iloc[0] in flagged
            label, style = (f"{variant} (evaluation unreliable)", "--") if unreliable else (variant, "-")
            ax.plot(m.eps, m.value * 100, style, marker="o", label=label)
        ax.set_ylim(-2, 102)
        files.append(_save(fig, ax, out / f"robust_{attack}_{norm}.png"))
    return files


def certified_vs_radius(df: pd.DataFrame, out: Path) -> list[str]:
    cert = df[df.metric == "certified_acc"]
    if cert.empty:
        return []
    fig, ax = _figure("Certified accuracy (randomized smoothing)", "L2 radius", "certified accuracy (%)")
    for model, m in cert.groupby("model", sort=False):
        m = m.sort_values("eps")
        ax.plot(m.eps, m.value * 100, marker="o", label=model)  # measured radii only; no step interpolation
    ax.set_ylim(-2, 102)
    return [_save(fig, ax, out / "certified.png")]


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not dominated by another with lower-or-equal ``x`` and higher-or-equal ``y``."""
    ordered = points.sort_values([x, y], ascending=[True, False])
    best, keep = -float("inf"), []
    for idx, r in ordered.iterrows():
        if r[y] > best:
            keep.append(idx)
            best = r[y]
    return ordered.loc[keep]


def _wide(df: pd.DataFrame, metric: str, batch_size: int | None = None) -> pd.Series:
    sub = df[df.metric == metric]
    if batch_size is not None:
        sub = sub[sub.batch_size == batch_size]
    return sub.assign(label=sub.apply(_label, axis=1)).groupby("label")["value"].first()


def accuracy_vs_cost(df: pd.DataFrame, out: Path) -> list[str]:
    files = []
    acc = _wide(df, "clean_acc")
    bs = df.loc[df.metric == "latency_ms_p50", "batch_size"].dropna()
    specs = []
    if not bs.empty:
        specs.append(
            ("latency", _wide(df, "latency_ms_p50", int(bs.min())), f"p50 latency at batch {int(bs.min())} (ms)")
        )
    specs.append(("size", _wide(df, "size_bytes") / 1024, "model size (KiB)"))
    for name, cost, xlabel in specs:
        pts = pd.DataFrame({"cost": cost, "acc": acc * 100}).dropna()
        if pts.empty:
            continue
        fig, ax = _figure(f"Clean accuracy vs {name}", xlabel, "clean accuracy (%)")
        ax.scatter(pts.cost, pts.acc, label="models")
        for label, r in pts.iterrows():
            ax.annotate(label, (r.cost, r.acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = pareto_front(pts, "cost", "acc")
        ax.plot(front.cost, front.acc, "r--", marker="s", label="Pareto front")
        files.append(_save(fig, ax, out / f"accuracy_vs_{name}.png"))
    return files


def write_report(run_dir: Path) -> Path:
    """Write ``report.md`` and its PNGs into ``run_dir``; returns the report's path."""
    df = read_csv(run_dir / "results.csv")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    plots = robust_vs_eps(df, run_dir) + certified_vs_radius(df, run_dir) + accuracy_vs_cost(df, run_dir)
    lines = [render_summary(df, manifest).rstrip(), "", "## Plots", ""]
    lines += [f"![{p.removesuffix('.png')}]({p})" for p in plots]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
