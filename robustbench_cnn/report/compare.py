"""Run-vs-run comparison with regression gating that ignores noise.

Rows are joined on their identity (everything but ``run_id`` and ``value``). A change is a
regression only when it is beyond a tolerance *and* meaningful for the sample size:

- accuracies (``clean_acc``, ``robust_acc``, ``certified_acc``): a drop of more than ``acc_points``
  points that the rows' 95% Clopper-Pearson intervals (``ci_low``/``ci_high``) say is real: the new
  interval lies wholly below the baseline's (new ``ci_high`` < baseline ``ci_low``; two disjoint 95%
  intervals are a two-sided test at about 0.6% for similar n). Where either row has no interval (tables
  from before the extension), a one-sided Fisher exact test on the two (correct, wrong) counts decides
  at ``alpha``, as before;
- median latency: new/base, divided by the machine's drift in its (batch_size, runtime) group,
  above ``latency_ratio``, slower by at least ``latency_floor_ms`` and, where both runs kept raw
  samples, judged on the calls no other process delayed, with the fast calls (p10) slowed as much and
  a one-sided Mann-Whitney U test significant at ``latency_alpha``; throughput: the same on base/new (see
  :mod:`robustbench_cnn.report.latency_gate`; p90/p99 and spreads are shown but never gated).
  Latencies are compared only when the two environments match (same CPU/GPU, threads and torch),
  else reported as not comparable;
- sanity checks: a check that passed and now fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact

from robustbench_cnn.contract.manifest import read_run_manifest
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.contract.schema import IDENTITY as IDENTITY_COLUMNS
from robustbench_cnn.contract.schema import gated
from robustbench_cnn.contract.verdicts import superseded, verdict_reasons, verdict_text
from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.report.latency_gate import (
    CONTENDED,
    CONTENDED_SHARE,
    MIN_GROUP_ROWS,
    TIMED,
    Drift,
    group_drift,
    latency_verdict,
)
from robustbench_cnn.report.tolerances import Tolerances
from robustbench_cnn.runtime.samples import SampleKey, read_samples, read_waited, samples_dir

IDENTITY = list(IDENTITY_COLUMNS)
ACCURACY = gated("accuracy")
CHECKS = gated("check")
INTERVAL = ["ci_low", "ci_high"]


class CompareError(RobustBenchError):
    exit_code = 2


@dataclass(frozen=True)
class Run:
    table: pd.DataFrame
    environment: dict[str, Any] | None
    source: str
    samples: Path | None = None  # the run's latency_samples/ directory, if it has one
    models: Mapping[str, Any] = field(default_factory=dict)  # the manifest's per-model facts (key, weights_sha256)

    def latency_samples(self, key: SampleKey) -> tuple[np.ndarray, np.ndarray | None] | None:
        """A latency row's per-call timings and, where recorded, per-call CPU waits (ms)."""
        found = None if self.samples is None else read_samples(self.samples, key)
        if found is None or self.samples is None:
            return None
        return found, read_waited(self.samples, key, len(found))


def load_run(path: Path) -> Run:
    """A run directory (results.csv + manifest.json) or a results CSV (+ optional ``<stem>.manifest.json``
    and ``<stem>.latency_samples/``)."""
    path = Path(path)
    csv, manifest = (path / "results.csv", path / "manifest.json") if path.is_dir() else (path, None)
    if manifest is None:
        manifest = path.with_name(path.stem + ".manifest.json")
    if not csv.is_file():
        raise CompareError(f"{path}: no results table found")
    table = read_csv(csv)  # validated: a contract breach is a one-line ResultsError (exit 2)
    facts = read_run_manifest(manifest) if manifest.is_file() else {}
    samples = samples_dir(path)
    return Run(table, facts.get("environment"), str(path), samples if samples.is_dir() else None,
               facts.get("models", {}))  # fmt: skip


def model_modes(base: Run, new: Run) -> dict[str, str]:
    """Per model in both runs, how its rows are compared: ``same weights`` (equal ``weights_sha256``:
    the rows differ only through evaluation), ``retrained`` (same cache key, other weights: the same
    recipe trained elsewhere, judged by the tolerances), ``changed`` (another key: a stale baseline)."""
    modes = {}
    for name, b in base.models.items():
        n = new.models.get(name)
        if not isinstance(n, Mapping) or not isinstance(b, Mapping):
            continue
        if b.get("weights_sha256") and b.get("weights_sha256") == n.get("weights_sha256"):
            modes[name] = "same weights"
        elif b.get("key") and n.get("key") and b["key"] != n["key"]:
            modes[name] = "changed"
        elif b.get("weights_sha256") and n.get("weights_sha256"):
            modes[name] = "retrained"
    return modes


def stale_models(base: Run, new: Run) -> list[str]:
    """One line per model whose weights key (a hash of its recipe, data, seed and the code it covers)
    differs from the baseline's: the baseline predates a change, so its rows say little about this one."""
    lines = []
    for name, b in base.models.items():
        n = new.models.get(name)
        if not isinstance(n, Mapping) or not isinstance(b, Mapping) or not b.get("key") or not n.get("key"):
            continue
        if b["key"] != n["key"]:
            lines.append(f"{name}: weights key {b['key']} -> {n['key']}: the baseline predates a change to its recipe, "
                         "data or code; refresh the baseline (run the suite, then copy the run's results.csv, "
                         "manifest.json and latency_samples/ over the baseline's files)")  # fmt: skip
    return lines


def environment_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    if a is None or b is None:
        return ["environment unknown for one side"]
    diffs = [f"{k}: {a.get(k)} -> {b.get(k)}" for k in ("cpu", "gpu", "torch_threads") if a.get(k) != b.get(k)]
    ta, tb = a.get("packages", {}).get("torch"), b.get("packages", {}).get("torch")
    if ta != tb:
        diffs.append(f"torch: {ta} -> {tb}")
    return diffs


def _has_intervals(r: Mapping[str, Any]) -> bool:
    return not any(pd.isna(r.get(f"{c}_{side}")) for c in INTERVAL for side in ("base", "new"))


def _change(r: Mapping[str, Any]) -> str:
    """A row's change in words: points (with both intervals where known) for accuracies, else a ratio."""
    d, nv, bv = r["delta"], r["value_new"], r["value_base"]
    if r["metric"] in ACCURACY:
        text = f"{d * 100:+.1f} pt"
        if _has_intervals(r):
            b, n = (f"[{r[f'ci_low_{s}'] * 100:.1f}, {r[f'ci_high_{s}'] * 100:.1f}]" for s in ("base", "new"))
            text += f" (95%: {b} -> {n})"
        return text
    return f"x{nv / bv:.2f}" if bv else f"{d:+.4g}"


def _verdict(r: Mapping[str, Any], tol: Tolerances, latency_comparable: bool, drift: Drift) -> tuple[str, float | None]:
    metric, base, new = r["metric"], r["value_base"], r["value_new"]
    if metric in ACCURACY:
        drop_points = (base - new) * 100
        if drop_points <= tol.acc_points or pd.isna(r["n_base"]) or pd.isna(r["n_new"]):
            return "ok", None
        if _has_intervals(r):
            return ("REGRESSION" if r["ci_high_new"] < r["ci_low_base"] else "noise"), None
        n_b, n_n = int(r["n_base"]), int(r["n_new"])
        k_b, k_n = round(base * n_b), round(new * n_n)
        p = fisher_exact([[k_b, n_b - k_b], [k_n, n_n - k_n]], alternative="greater").pvalue
        return ("REGRESSION" if p < tol.alpha else "noise"), float(p)
    if metric in TIMED:
        if not latency_comparable:
            return "not comparable", None
        return latency_verdict(r, tol, drift)
    if metric in CHECKS:
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
        for col in INTERVAL:
            if col not in df.columns:
                df[col] = np.nan
        return df[[*IDENTITY, "value", "n", *INTERVAL]].drop_duplicates(IDENTITY)

    merged = keyed(base.table).merge(keyed(new.table), on=IDENTITY, how="outer", suffixes=("_base", "_new"),
                                     indicator=True)  # fmt: skip
    both = merged[merged["_merge"] == "both"].copy()
    added = merged[merged["_merge"] == "right_only"][IDENTITY]
    removed = merged[merged["_merge"] == "left_only"][IDENTITY]
    env_diffs = environment_differences(base.environment, new.environment)
    normalize = tol.normalize_latency and not env_diffs
    min_rows = MIN_GROUP_ROWS if normalize else len(both) + 1  # unnormalized: samples still read, no drift
    drift = group_drift(both, base.latency_samples, new.latency_samples, min_rows) if not env_diffs else Drift({}, {})
    verdicts = [_verdict(r, tol, not env_diffs, drift) for r in both.to_dict("records")]
    both.attrs["machine_factors"] = drift.p50
    both.attrs["latency_alpha"] = tol.latency_alpha
    both["verdict"] = [v for v, _ in verdicts]
    both.loc[_superseded(both, keyed(new.table)), "verdict"] = "note"  # see report.checks
    modes = model_modes(base, new)
    both.loc[_same_weights_mismatch(both, modes), "verdict"] = "REGRESSION"
    both.attrs["model_modes"] = modes  # read by render and the CLI, with turned_unreliable
    both.attrs["turned_unreliable"] = turned_unreliable(base, new)
    both["p_value"] = [p for _, p in verdicts]
    both["delta"] = both["value_new"] - both["value_base"]
    return both.drop(columns="_merge"), added, removed, env_diffs


SAME_WEIGHTS_SLACK = 1  # images: with identical weights an accuracy row may move by this much at most


def _same_weights_mismatch(both: pd.DataFrame, modes: Mapping[str, str]) -> pd.Series:
    """Accuracy rows of a model with the same weights on both sides (``model_modes``) that moved by more
    than :data:`SAME_WEIGHTS_SLACK` images, either way: the evaluation changed, not the model (measured
    across ISA settings on one machine: 0 of 231 smoke rows move), so the baseline no longer stands."""
    same = both.model.map(lambda m: modes.get(str(m)) == "same weights").astype(bool)
    n = pd.to_numeric(both.n_base, errors="coerce")
    moved = ((both.value_new - both.value_base).abs() * n).round() > SAME_WEIGHTS_SLACK
    return same & both.metric.isin(ACCURACY) & moved.fillna(False).astype(bool)


def _superseded(both: pd.DataFrame, new: pd.DataFrame) -> pd.Series:
    """``check_more_steps`` rows that turned 0 where the new run's worst case converged at that budget
    (``check_headline_converged`` = 1): notes about one attack, not a model turning unreliable."""
    notes = {tuple(r) for r in new.loc[superseded(new), IDENTITY].itertuples(index=False)}
    hit = pd.Series([tuple(r) in notes for r in both[IDENTITY].itertuples(index=False)], index=both.index, dtype=bool)
    return hit & (both.verdict == "REGRESSION")


def turned_unreliable(base: Run, new: Run) -> list[str]:
    """``model: UNRELIABLE (reasons)`` for each model reliable in the baseline and not in the new run, a
    regression whichever check says so (also one the baseline did not run, e.g. a new ``check_eot``)."""
    before, after = verdict_reasons(base.table), verdict_reasons(new.table)
    return [f"{m}: {verdict_text(r)}" for m, r in after.items() if r and m in before and not before[m]]


def describe(r: Mapping[str, Any]) -> str:
    """One row's identity in words: model, format/runtime, compression, metric, attack, norm, eps, batch."""
    parts = [r["model"], f"{r['format']}/{r['runtime']}"]
    parts += [r["compression"]] if r["compression"] not in ("", "none") else []
    parts += [r["metric"], r["attack"], r["norm"]]
    parts += [f"eps {r['eps']}"] if r["eps"] != "" else []
    parts += [f"bs {r['batch_size']}"] if r["batch_size"] != "" else []
    return " ".join(str(p) if str(p).isprintable() else ascii(str(p)) for p in parts if p != "")


def check_coverage(base: Run, new: Run, removed: pd.DataFrame, allow_removed: bool = False) -> None:
    """Refuse to judge a NEW table that is empty, or that lacks baseline rows (unless ``allow_removed``):
    a run that silently lost rows must not pass the gate."""
    for run in (base, new):
        if run.table.empty:
            raise CompareError(f"{run.source}: the results table has no rows; point at a finished run")
    if len(removed) and not allow_removed:
        first = describe(removed.iloc[0])
        raise CompareError(f"{new.source}: {len(removed)} baseline row(s) missing (first: {first}); "
                           "pass --allow-removed if they were dropped on purpose")  # fmt: skip


def _notes(joined: pd.DataFrame, env: list[str], base: Run, new: Run) -> list[str]:
    lines = []
    if joined.metric.isin(ACCURACY).any():
        lines += ["> an accuracy drop is a regression only beyond the tolerance and when the new 95% interval "
                  "lies wholly below the baseline's (no intervals: one-sided Fisher exact test).", ""]  # fmt: skip
    if env:
        lines += ["> environments differ (" + "; ".join(env) + "): latencies are not comparable.", ""]
        return lines
    factors = joined.attrs.get("machine_factors", {})
    if factors:
        drift = ", ".join(f"bs {bs} {rt} x{f:.2f}" for (bs, rt), f in factors.items())
        lines += [f"> machine drift per (batch size, runtime), the median new/base p50: {drift}; latency "
                  "verdicts are relative to their group's drift (--no-normalize-latency: raw ratios).", ""]  # fmt: skip
    if not joined.metric.isin(TIMED).any():
        return lines
    missing = [r.source for r in (base, new) if r.samples is None]
    if missing:
        return [*lines, f"> no raw latency samples in {' and '.join(missing)}: latency judged on percentiles.", ""]
    alpha = joined.attrs.get("latency_alpha", 0.01)
    lines += [f"> raw latency samples on both sides: a slowdown counts only if the fast calls (p10) slowed "
              f"as much and a one-sided Mann-Whitney U test finds it (p < {alpha:g}).", ""]  # fmt: skip
    contended = int((joined.verdict == CONTENDED).sum())
    return [*lines, f"> calls whose threads waited for a CPU over {CONTENDED_SHARE:.0%} of their time (another "
            f"process ran; where a run recorded it) are left out: {contended} row(s) had too few calls left "
            "and are not judged.", ""]  # fmt: skip


def render(
    joined: pd.DataFrame, added: pd.DataFrame, removed: pd.DataFrame, env: list[str], base: Run, new: Run
) -> str:
    regressions = joined[joined.verdict == "REGRESSION"]
    lines = [f"# compare {base.source} -> {new.source}", "",
             f"**{len(regressions)} regression(s)** in {len(joined)} matched rows; "
             f"{len(added)} added, {len(removed)} removed.", ""]  # fmt: skip
    stale = stale_models(base, new)
    lines += [f"> stale baseline for {s}" for s in stale] + ([""] if stale else [])
    modes = joined.attrs.get("model_modes", {})
    if modes:
        lines += ["> models: " + "; ".join(f"{m} {mode}" for m, mode in modes.items()), ""]
    turned = joined.attrs.get("turned_unreliable", [])
    lines += [f"> **REGRESSION**: {t} (reliable in the baseline)" for t in turned] + ([""] if turned else [])
    lines += _notes(joined, env, base, new)
    shown = joined[(joined.verdict != "ok") | (joined.delta.abs() > 0)].copy()
    if not shown.empty:
        cols = ["model", "format", "runtime", "compression", "metric", "attack", "norm", "eps", "batch_size"]
        shown["change"] = [_change(r) for r in shown.to_dict("records")]
        table = shown[[*cols, "value_base", "value_new", "change", "p_value", "verdict"]]
        lines.append(table.to_markdown(index=False, floatfmt=".4g"))
    for title, rows in (("Added", added), ("Removed", removed)):
        if not rows.empty:
            lines += ["", f"## {title}", "", *[f"- {describe(r)}" for r in rows.to_dict("records")]]
    return "\n".join(lines) + "\n"
