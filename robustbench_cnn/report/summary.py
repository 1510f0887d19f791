"""``summary.md``: the wide, human table (one row per model variant) built from the tidy rows.

Accuracies are shown with their 95% Clopper-Pearson interval from ``n`` (the row's ``ci_low``/``ci_high``),
e.g. ``41.7 [36.6, 47.0]``: with 360 images a robust accuracy is known to about +-5 points."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from robustbench_cnn.contract.verdicts import deciding, failing, notes, reason, verdict_text
from robustbench_cnn.report.leaderboard import ThreatModel, leaderboard, ranked, threat_models
from robustbench_cnn.report.reproduction import render_markdown, render_terminal, reproduction

VARIANT = ["model", "arch", "defense", "compression", "format", "runtime"]


def format_interval(value: float, low: float | None, high: float | None, scale: float = 100.0) -> str:
    """An accuracy with its 95% interval, e.g. ``93.1 [90.0, 95.5]`` (scaled to %, one decimal); the bare
    value when the row carries no interval (``ci_low``/``ci_high`` empty)."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{value * scale:.1f}"
    return f"{value * scale:.1f} [{low * scale:.1f}, {high * scale:.1f}]"


def _with_interval(sub: pd.DataFrame) -> pd.DataFrame:
    """Accuracy rows with ``value`` replaced by its text with the interval (``format_interval``)."""
    low = sub["ci_low"] if "ci_low" in sub.columns else pd.Series(None, index=sub.index)
    high = sub["ci_high"] if "ci_high" in sub.columns else pd.Series(None, index=sub.index)
    text = [format_interval(v, lo, hi) for v, lo, hi in zip(sub.value, low, high, strict=True)]
    return sub.assign(value=pd.Series(text, index=sub.index, dtype=object))


def _attack_column(r: pd.Series) -> str:
    return f"{r['attack']}-{r['norm']} @{r['eps']:.4g}"


def wide_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model variant: clean metrics, robust accuracy per attack/eps (accuracies as text
    with their 95% interval), size and speed."""
    if df.empty:
        return pd.DataFrame(columns=VARIANT)
    keyed = df.fillna({c: "" for c in VARIANT})
    out = keyed[VARIANT].drop_duplicates().set_index(VARIANT)

    def put(name: str, sub: pd.DataFrame) -> None:
        if not sub.empty:
            out[name] = sub.set_index(VARIANT)["value"]

    put("clean %", _with_interval(keyed[keyed.metric == "clean_acc"]))
    for metric, label in (("macro_f1", "macro F1"), ("ece", "ECE")):
        put(label, keyed[keyed.metric == metric])
    robust = keyed[keyed.metric == "robust_acc"]
    for col, sub in robust.groupby(robust.apply(_attack_column, axis=1), sort=False):
        put(f"{col} %", _with_interval(sub))
    certified = keyed[keyed.metric == "certified_acc"]
    for r, sub in certified.groupby("eps", sort=True):
        put(f"certified l2 @{r:.4g} %", _with_interval(sub))
    put("corruption %", keyed[keyed.metric == "mean_corruption_acc"].assign(value=lambda d: d.value * 100))
    checks = deciding(keyed)
    if not checks.empty:
        out["evaluation"] = checks.groupby(VARIANT).apply(
            lambda rows: verdict_text([reason(r) for _, r in rows[rows.value < 1].iterrows()])
        )
    put("params (k)", keyed[keyed.metric == "params"].assign(value=lambda d: d.value / 1e3))
    put("MMACs", keyed[keyed.metric == "macs"].assign(value=lambda d: d.value / 1e6))
    for bs in sorted(keyed.loc[keyed.metric == "latency_ms_p50", "batch_size"].dropna().unique()):
        put(f"p50 ms (bs {int(bs)})", keyed[(keyed.metric == "latency_ms_p50") & (keyed.batch_size == bs)])
    return out.reset_index()


def render(df: pd.DataFrame, manifest: Mapping[str, Any]) -> str:
    wide = wide_table(df)
    title = f"# {manifest.get('suite', '')} — run {manifest.get('run_id', '')}"
    env = manifest.get("environment", {})
    facts = [
        f"status: **{manifest.get('status')}**",
        f"seed {manifest.get('seed')}",
        f"device {manifest.get('device')} ({env.get('gpu') or env.get('cpu', '?')})",
        f"wall {manifest.get('wall_seconds', 0):.0f} s",
    ]
    cache = [f"{name}: {info.get('cache', info.get('source'))}" for name, info in manifest.get("models", {}).items()]
    lines = [title, "", " · ".join(facts), ""]
    if cache:
        lines += ["models: " + ", ".join(cache), ""]
    if wide.empty:
        lines.append("_no results_")
    else:  # tabulate leaves None (not NaN) cells blank
        lines.append(wide.astype(object).where(wide.notna(), None).to_markdown(index=False, floatfmt=".4g"))
    lines += _warnings(manifest)
    lines += render_markdown(reproduction(df, manifest))
    return "\n".join(lines) + "\n"


def _warnings(manifest: Mapping[str, Any]) -> list[str]:
    """A section listing failed gradient-masking checks: those models' robust numbers are unreliable."""
    lines = []
    for name, info in manifest.get("models", {}).items():
        failed = {c: r["detail"] for c, r in info.get("checks", {}).items() if failing(r)}
        if failed:
            details = "; ".join(f"`{c}` ({d})" for c, d in failed.items())
            lines.append(f"- **{name}**: evaluation unreliable, failed {details}")
    if lines:
        lines = [
            "",
            "## Warnings",
            "",
            "Sanity checks (Carlini et al. 2019) failed; robust accuracy may be overstated:",
            "",
        ] + lines
    superseded = [f"- {name}: `{c}` {n}" for name, info in manifest.get("models", {}).items()
                  for c, n in notes(info.get("checks", {})).items()]  # fmt: skip
    if superseded:
        lines += ["", "## Notes", "", "Attack rows not converged where the worst case is (not a verdict):", "",
                  *superseded]  # fmt: skip
    return lines


def write_summary(df: pd.DataFrame, manifest: Mapping[str, Any], path: Path) -> str:
    text = render(df, manifest)
    path.write_text(text)
    return text


def finish_run(df: pd.DataFrame, manifest: Mapping[str, Any], run_dir: Path) -> None:
    """The views a run writes when it ends (``RunOptions.finish``): ``summary.md``."""
    write_summary(df, manifest, run_dir / "summary.md")


def _pct(v: float | None) -> str:
    return "" if v is None or pd.isna(v) else f"{v * 100:.1f}"


def _cell(text: str, width: int, middle: bool = False) -> str:
    """``text`` cut to ``width`` with a ``~`` where it was cut (in the middle: keeps a variant's format)."""
    if len(text) <= width:
        return text
    if middle:
        tail = (width - 1) // 2
        return text[: width - 1 - tail] + "~" + text[-tail:]
    return text[: width - 1] + "~"


DEFAULT_RUNTIME = {"torch": "torch", "onnx": "onnxruntime", "tflite": "tflite"}


def _board_lines(board: pd.DataFrame, tm: ThreatModel, width: int) -> list[str]:
    """One ranked leaderboard as terminal lines, with the footnotes its marks need."""
    board = board.assign(variant=board.apply(short_label, axis=1))
    rob, cert = tm.robust_header() + " %", tm.certified_header() + " %"
    bs = board.latency_batch.dropna()
    lat = f"p50 ms bs{int(bs.iloc[0])}" if not bs.empty else "p50 ms"
    cols = [("verdict", 10, "<"), ("variant", 0, "<"), ("clean %", 7, ">"), (rob, max(len(rob), 8), ">"),
            (cert, max(len(cert), 8), ">"), ("size KiB", 9, ">"), (lat, max(len(lat), 8), ">")]  # fmt: skip
    corrupted = board.corruption.notna().any()
    if corrupted:  # the robustness profile: clean, adversarial, common corruptions, certified
        cols.insert(4, ("corrupt %", 9, ">"))
    room = width - sum(w for _, w, _ in cols) - 2 * (len(cols) - 1)  # what is left for the variant's name
    cols[1] = ("variant", max(12, min(room, int(board.variant.str.len().max()))), "<")
    lines = ["  ".join(f"{_cell(h, w):{a}{w}}" for h, w, a in cols)]
    for _, r in board.iterrows():
        robust = _pct(r.robust) + ("*" if r.robust_kind == "min" else "") + ("~" if r.eot else "")
        size = "" if pd.isna(r.size_bytes) else f"{r.size_bytes / 1024:.1f}"
        p50 = "" if pd.isna(r.p50_ms) else f"{r.p50_ms:.3g}"
        verdict = "UNRELIABLE" if r.verdict.startswith("UNRELIABLE") else r.verdict
        vals = [verdict, _cell(r.variant, cols[1][1], middle=True), _pct(r.clean), robust, _pct(r.certified), size, p50]
        if corrupted:
            vals.insert(4, _pct(r.corruption))
        lines.append("  ".join(f"{_cell(v, w):{a}{w}}" for v, (_, w, a) in zip(vals, cols, strict=True)).rstrip())
    if tm.eps is not None:
        lines.append(f"robust: per-example worst case over every attack at {tm.norm} {tm.eps:g} ({tm.rule})")
    if (board.robust_kind == "min").any():
        lines.append("* min over attacks, an upper bound (no per-example worst case): ranked after every worst case")
    if board.eot.any():
        lines.append("~ randomized model: attacked through EOT (the mean of checks.eot_samples forward passes)")
    return lines


def short_label(r: pd.Series) -> str:
    """``model / compression / format``, the runtime only where it is not the format's usual one."""
    parts = [str(r["model"])] + [str(r[c]) for c in ("compression", "format") if r[c] not in ("none", "torch")]
    if DEFAULT_RUNTIME.get(str(r["format"])) != r["runtime"]:
        parts.append(str(r["runtime"]))
    return " / ".join(parts)


def compact(df: pd.DataFrame, manifest: Mapping[str, Any], width: int = 120) -> str:
    """The terminal view: one leaderboard per headline threat model, at most ``width`` columns,
    verdict first, ranked (``ranked``).

    The wide table stays in ``summary.md``; this is what a run prints at its end."""
    head = f"# {manifest.get('suite', '')} — run {manifest.get('run_id', '')}: {manifest.get('status')}"
    lines = [_cell(head, width)]
    for tm in threat_models(df, manifest):
        board, _ = leaderboard(df, manifest, tm)
        if board.empty:
            return "\n".join([*lines, "no results"]) + "\n"
        lines += _board_lines(ranked(board), tm, width)
    for name, info in manifest.get("models", {}).items():
        failed = [c for c, r in info.get("checks", {}).items() if failing(r)]
        if failed:
            lines.append(_cell(f"warning: {name}: evaluation unreliable, failed {', '.join(failed)}", width))
    lines += render_terminal(reproduction(df, manifest), width)
    lines.append("full table: summary.md; report: report.html")
    return "\n".join(line[:width] for line in lines) + "\n"
