"""Published vs measured, per zoo model and published figure (RobustBench's "claimed" beside "measured").

A figure is matched with the run's row of the same metric, attack, norm and eps (torch format), and
judged by the row's 95% Clopper-Pearson interval:

- ``reproduced``: the published value lies inside the interval;
- ``differs``: it does not. A clean accuracy that differs is the symptom of wrong preprocessing
  (:func:`warnings` says so); a worst case *above* a published attack means the suite's own
  evaluation is weaker than one that was published;
- ``stronger attack``: the suite's worst case is below a published robust accuracy (the whole interval
  is): expected where the published attack was weak (a PGD without restarts), and said so;
- ``impossible``: robust accuracy below a published *certified* lower bound (the whole interval is):
  no correct attack can do that, so the evaluation or the loading is wrong;
- ``consistent``: at or above a certified lower bound.

Each published attack figure is also compared with the worst case at its budget, so a model whose
published number came from a weak attack shows what the ensemble finds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from robustbench_cnn.zoo import ZOO
from robustbench_cnn.zoo.entries import Figure

COLUMNS = ["model", "zoo", "figure", "published", "measured", "ci_low", "ci_high", "n", "verdict"]


def _row(df: pd.DataFrame, model: str, f: Figure, attack: str) -> pd.Series | None:
    own = df[df.model == model]
    if (own.format == "torch").any():  # a torch model's own rows, not its exports'; an artifact has only its own
        own = own[own.format == "torch"]
    if f.kind == "clean":
        hits = own[own.metric == "clean_acc"]
    else:
        eps = pd.to_numeric(own.eps, errors="coerce")
        hits = own[(own.metric == "robust_acc") & (own.attack == attack) & (own.norm == f.norm)
                   & ((eps - f.eps).abs() < 1e-9)]  # fmt: skip
    return hits.iloc[0] if len(hits) else None


def _verdict(kind: str, published: float, low: float, high: float, worst: bool) -> str:
    if kind == "certified":
        return "impossible" if high < published else "consistent"
    if low <= published <= high:
        return "reproduced"
    if worst and high < published:
        return "stronger attack"
    return "differs"


def _judge(model: str, zoo: str, f: Figure, row: pd.Series | None, worst: bool) -> dict[str, Any]:
    label = f"{'worst case vs ' if worst and f.kind == 'attack' else ''}{f.label}"
    label += " (certified lower bound)" if f.kind == "certified" else ""
    out: dict[str, Any] = {"model": model, "zoo": zoo, "figure": label, "published": f.value}
    if row is None:
        return {**out, "verdict": "not measured"}
    value, n = float(row["value"]), int(row["n"]) if pd.notna(row.get("n")) else 0
    low = float(row["ci_low"]) if pd.notna(row.get("ci_low")) else value
    high = float(row["ci_high"]) if pd.notna(row.get("ci_high")) else value
    verdict = _verdict(f.kind, f.value, low, high, worst)
    return {**out, "measured": value, "ci_low": low, "ci_high": high, "n": n, "verdict": verdict}


def reproduction(df: pd.DataFrame, manifest: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (zoo model of the run, published figure) with the verdicts of the module docstring."""
    rows = []
    for model, info in manifest.get("models", {}).items():
        entry = ZOO.get(str(info.get("zoo", "")))
        if entry is None:
            continue
        for f in entry.figures:
            if f.kind in ("clean", "attack"):
                rows.append(_judge(model, entry.name, f, _row(df, model, f, f.attack), worst=False))
            if f.kind != "clean":
                rows.append(_judge(model, entry.name, f, _row(df, model, f, "worst_case"), worst=True))
    return pd.DataFrame(rows, columns=COLUMNS)


def _pct(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.2f}"


def render_markdown(table: pd.DataFrame) -> list[str]:
    """The table as Markdown lines under a ``## Reproduction`` heading (nothing without zoo models)."""
    if table.empty:
        return []
    head = "| model | figure | published % | measured % [95% CI] | n | verdict |"
    lines = ["", "## Reproduction of published figures", "", head, "|---|---|---:|---:|---:|---|"]
    for _, r in table.iterrows():
        measured = f"{_pct(r.measured)} [{_pct(r.ci_low)}, {_pct(r.ci_high)}]" if pd.notna(r.measured) else ""
        n = f"{int(r.n):,}" if pd.notna(r.n) else ""
        lines.append(f"| {r.model} | {r.figure} | {_pct(r.published)} | {measured} | {n} | **{r.verdict}** |")
    return lines + [""] + [f"- {w}" for w in warnings(table)]


def warnings(table: pd.DataFrame) -> list[str]:
    """Prominent lines: clean accuracy that contradicts its published figure, and impossible numbers."""
    out = []
    for _, r in table.iterrows():
        if r.figure == "clean" and r.verdict == "differs":
            out.append(f"{r.model}: wrong preprocessing or checkpoint? clean accuracy {_pct(r.measured)}% contradicts "
                       f"the published {_pct(r.published)}% (zoo:{r.zoo})")  # fmt: skip
        elif r.verdict == "impossible":
            out.append(f"{r.model}: an evaluation or loading bug: robust accuracy {_pct(r.measured)}% is below the "
                       f"certified lower bound {_pct(r.published)}% (zoo:{r.zoo})")  # fmt: skip
    return out


def render_terminal(table: pd.DataFrame, width: int = 120) -> list[str]:
    """Compact lines for the terminal: ``model  figure  published -> measured  verdict``."""
    if table.empty:
        return []
    lines = ["reproduction (published -> measured %, images):"]
    for _, r in table.iterrows():
        measured = f"{_pct(r.measured)} ({int(r.n):,})" if pd.notna(r.measured) else "-"
        lines.append(f"  {r.verdict:<15} {r.model}: {r.figure}: {_pct(r.published)} -> {measured}"[:width])
    return lines + [f"warning: {w}"[:width] for w in warnings(table)]
