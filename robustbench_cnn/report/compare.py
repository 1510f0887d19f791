"""Run-vs-run comparison with regression gating that ignores noise.

Rows are joined on their identity (everything but ``run_id`` and ``value``). A change is a
regression only when it is beyond a tolerance *and* meaningful for the sample size:

- accuracies (``clean_acc``, ``robust_acc``, ``certified_acc``): a drop of more than ``acc_points``
  points that a one-sided Fisher exact test on the two (correct, wrong) counts finds significant
  at ``alpha``;
- median latency: new/base, divided by the run-wide median of that ratio (the machine's drift,
  see :func:`machine_factor`), above ``latency_ratio`` and slower by at least ``latency_floor_ms``;
  throughput: base/new above the ratio, the same floor on the implied time per batch (p90/p99 are
  shown but never gated: tails are too noisy on shared machines). Latencies are compared only when
  the two environments match (same CPU/GPU, threads and torch), else reported as not comparable;
- sanity checks: a check that passed and now fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import fisher_exact

from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.suite.results import read_csv

IDENTITY = ["suite", "dataset", "model", "arch", "defense", "compression", "format", "runtime", "device", "metric",
            "attack", "norm", "eps", "batch_size"]  # fmt: skip
ACCURACY = {"clean_acc", "robust_acc", "certified_acc"}
LATENCY = {"latency_ms_p50", "latency_ms_p90", "latency_ms_p99"}
GATED_LATENCY = {"latency_ms_p50", "throughput"}  # tail percentiles are reported, never gated: too noisy


class CompareError(RobustBenchError):
    exit_code = 2


@dataclass(frozen=True)
class Tolerances:
    acc_points: float = 2.0
    alpha: float = 0.05
    latency_ratio: float = 2.0  # one model's p50 at batch 1 moved x1.51 between two runs of one build here
    latency_floor_ms: float = 0.5  # and slower by at least this much: sub-millisecond jitter is not a regression
    normalize_latency: bool = True  # divide latency ratios by the run-wide median ratio (machine speed)


@dataclass(frozen=True)
class Run:
    table: pd.DataFrame
    environment: dict[str, Any] | None
    source: str


def load_run(path: Path) -> Run:
    """A run directory (results.csv + manifest.json) or a results CSV (+ optional ``<stem>.manifest.json``)."""
    path = Path(path)
    csv, manifest = (path / "results.csv", path / "manifest.json") if path.is_dir() else (path, None)
    if manifest is None:
        manifest = path.with_name(path.stem + ".manifest.json")
    if not csv.is_file():
        raise CompareError(f"{path}: no results table found")
    try:
        table = read_csv(csv)
        pd.to_numeric(table["value"], errors="raise")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CompareError(f"{csv}: malformed results table ({str(exc).splitlines()[0]})") from None
    env = None
    if manifest.is_file():
        try:
            env = json.loads(manifest.read_text()).get("environment")
        except json.JSONDecodeError as exc:
            raise CompareError(f"{manifest}: malformed manifest ({exc})") from None
    return Run(table, env, str(path))


def environment_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    if a is None or b is None:
        return ["environment unknown for one side"]
    diffs = [f"{k}: {a.get(k)} -> {b.get(k)}" for k in ("cpu", "gpu", "torch_threads") if a.get(k) != b.get(k)]
    ta, tb = a.get("packages", {}).get("torch"), b.get("packages", {}).get("torch")
    if ta != tb:
        diffs.append(f"torch: {ta} -> {tb}")
    return diffs


def machine_factor(both: pd.DataFrame) -> float:
    """Median new/base ratio of all median latencies: how much slower the machine as a whole ran.

    A shared machine's speed drifts by tens of percent between runs and moves every model alike;
    a regression in one model's code moves that model alone. Needs at least 3 latency rows.
    """
    p50 = both[both.metric == "latency_ms_p50"]
    if len(p50) < 3:
        return 1.0
    return float((p50.value_new / p50.value_base).median())


def _verdict(r: pd.Series, tol: Tolerances, latency_comparable: bool, speed: float = 1.0) -> tuple[str, float | None]:
    metric, base, new = r["metric"], r["value_base"], r["value_new"]
    if metric in ACCURACY:
        drop_points = (base - new) * 100
        if drop_points <= tol.acc_points or pd.isna(r["n_base"]) or pd.isna(r["n_new"]):
            return "ok", None
        n_b, n_n = int(r["n_base"]), int(r["n_new"])
        k_b, k_n = round(base * n_b), round(new * n_n)
        p = fisher_exact([[k_b, n_b - k_b], [k_n, n_n - k_n]], alternative="greater").pvalue
        return ("REGRESSION" if p < tol.alpha else "noise"), float(p)
    if metric in LATENCY or metric == "throughput":
        if not latency_comparable:
            return "not comparable", None
        ratio = (new / base if metric in LATENCY else base / new) / speed
        bs = 1 if pd.isna(r["batch_size"]) or r["batch_size"] == "" else float(r["batch_size"])
        ms_base, ms_new = (base, new) if metric in LATENCY else (1e3 * bs / base, 1e3 * bs / new)
        if ratio <= tol.latency_ratio or ms_new / speed - ms_base < tol.latency_floor_ms:
            return "ok", None
        return ("REGRESSION" if metric in GATED_LATENCY else "slower (tail, not gated)"), None
    if metric.startswith("check_"):
        return ("REGRESSION" if base == 1 and new == 0 else "ok"), None
    return "ok", None


def compare(base: Run, new: Run, tol: Tolerances) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(joined rows with delta and verdict, added rows, removed rows, environment differences)."""

    def keyed(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        for col in IDENTITY:
            if col not in df.columns:
                df[col] = pd.NA
        df[IDENTITY] = df[IDENTITY].astype("string").fillna("")
        return df[[*IDENTITY, "value", "n"]].drop_duplicates(IDENTITY)

    merged = keyed(base.table).merge(keyed(new.table), on=IDENTITY, how="outer", suffixes=("_base", "_new"),
                                     indicator=True)  # fmt: skip
    both = merged[merged["_merge"] == "both"].copy()
    added = merged[merged["_merge"] == "right_only"][IDENTITY]
    removed = merged[merged["_merge"] == "left_only"][IDENTITY]
    env_diffs = environment_differences(base.environment, new.environment)
    speed = machine_factor(both) if tol.normalize_latency and not env_diffs else 1.0
    both.attrs["machine_factor"] = speed
    verdicts = [_verdict(r, tol, not env_diffs, speed) for _, r in both.iterrows()]
    both["verdict"] = [v for v, _ in verdicts]
    both["p_value"] = [p for _, p in verdicts]
    both["delta"] = both["value_new"] - both["value_base"]
    return both.drop(columns="_merge"), added, removed, env_diffs


def render(
    joined: pd.DataFrame, added: pd.DataFrame, removed: pd.DataFrame, env: list[str], base: Run, new: Run
) -> str:
    regressions = joined[joined.verdict == "REGRESSION"]
    lines = [f"# compare {base.source} -> {new.source}", "",
             f"**{len(regressions)} regression(s)** in {len(joined)} matched rows; "
             f"{len(added)} added, {len(removed)} removed.", ""]  # fmt: skip
    if env:
        lines += ["> environments differ (" + "; ".join(env) + "): latencies are not comparable.", ""]
    factor = joined.attrs.get("machine_factor", 1.0)
    if factor != 1.0:
        lines += [f"> the machine ran x{factor:.2f} the baseline's median latency across all models; latency "
                  "verdicts are judged relative to that (--no-normalize-latency to judge raw ratios).", ""]  # fmt: skip
    shown = joined[(joined.verdict != "ok") | (joined.delta.abs() > 0)].copy()
    if not shown.empty:
        cols = ["model", "metric", "attack", "norm", "eps", "runtime", "batch_size"]
        shown["change"] = [
            f"{d * 100:+.1f} pt" if m in ACCURACY else (f"x{nv / bv:.2f}" if bv else f"{d:+.4g}")
            for m, d, nv, bv in zip(shown.metric, shown.delta, shown.value_new, shown.value_base, strict=True)
        ]
        table = shown[[*cols, "value_base", "value_new", "change", "p_value", "verdict"]]
        lines.append(table.to_markdown(index=False, floatfmt=".4g"))
    for title, rows in (("Added", added), ("Removed", removed)):
        if not rows.empty:
            cells = rows[["model", "metric", "attack", "eps"]].astype(str).agg(" ".join, axis=1)
            lines += ["", f"## {title}", "", *[f"- {c}" for c in cells]]
    return "\n".join(lines) + "\n"
