"""Latency verdicts that do not cry wolf on a shared machine.

The calls judged: where a run recorded, per call, how long its threads waited for a CPU
(:mod:`robustbench_cnn.runtime.timing`), only the calls that waited at most ``CONTENDED_SHARE`` of
their time. With two intra-op threads and another process busy on the second core, a descheduled
pool thread stalls the call for the other process's time slice (4 ms here), so a 1.8 ms call takes
5.8 ms, and the share of calls hit depends on the scheduler's phase: one row's p50 moved x2.2 while
its neighbour's did not move (issue #14: 2 of 8 rows flagged at 2 threads). Those calls measure the
machine, not the code, and the kernel says which they are. A row with fewer than ``MIN_CALLS`` such
calls on a side (a call longer than the slice waits every time) is *not judged* ("contended"), and
``compare`` says how many; without recorded waits (older runs) every call is judged.

A latency change is then a regression only if, after dividing out the machine's drift,

1. the effect is large: the median-latency ratio new/base (throughput: base/new) exceeds
   ``latency_ratio`` and the slowdown is at least ``latency_floor_ms``; and, where both runs kept their
   raw per-call timings (:mod:`robustbench_cnn.runtime.samples`), on the judged calls,
2. the fast calls slowed down too: the ratio of the ``LOW_QUANTILE`` (10th percentile) also exceeds
   ``latency_ratio``. Contention only ever adds time to some calls, so it moves the median but hardly
   the fast tail (``timeit``'s argument for its minimum), while slower code slows every call; and
3. a one-sided Mann-Whitney U test (Mann & Whitney 1947; scipy) finds the drift-corrected new samples
   stochastically greater than the base samples at ``latency_alpha``.

Without samples (old baselines store only percentiles) rule 1 alone decides, on the table's values.

Drift is estimated per (batch_size, runtime) group as the median new/base ratio of the group's rows
(of medians, and of low quantiles): load from another process slows multi-threaded batch-64 kernels far
more than batch-1 calls (issue #14: one run-wide factor of x0.71 while batch-64 p50s moved up to x24,
5.6 -> 136 ms), so one run-wide factor both hides and invents regressions. A group needs
``MIN_GROUP_ROWS`` rows to estimate its drift; smaller groups are judged on raw ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from robustbench_cnn.report.tolerances import Tolerances
from robustbench_cnn.runtime.samples import SampleKey
from robustbench_cnn.runtime.timing import CALM_SHARE

LATENCY = {"latency_ms_p50", "latency_ms_p90", "latency_ms_p99"}
SPREAD = {"latency_ms_iqr", "latency_ms_std"}
GATED = {"latency_ms_p50", "throughput"}  # tail percentiles and spreads are reported, never gated: too noisy
TIMED = LATENCY | SPREAD | {"throughput"}
MIN_GROUP_ROWS = 3
LOW_QUANTILE = 10  # percent
CONTENDED_SHARE = CALM_SHARE  # a call whose threads waited for a CPU longer than this share of its time: not judged
MIN_CALLS = 8  # judged calls a side needs; fewer: the row was contended throughout and is not judged
CONTENDED = "contended (not judged)"

Group = tuple[str, str]  # (batch_size, runtime) as they appear in the joined table's identity columns
# a run's samples for a row: (per-call ms, per-call CPU waits in ms or None), or None without samples
SampleReader = Callable[[SampleKey], tuple[np.ndarray, np.ndarray | None] | None]


def _ratio(num: float, den: float) -> float:
    """num/den for non-negative numbers, with 0/0 = 1 and x/0 = inf."""
    if den > 0:
        return num / den
    return 1.0 if num <= 0 else math.inf


def judged_calls(samples: np.ndarray, waited: np.ndarray | None) -> np.ndarray | None:
    """The calls the gate judges: all without waits; else those whose threads waited for a CPU at most
    ``CONTENDED_SHARE`` of the call's time, or None when fewer than ``MIN_CALLS`` did."""
    if waited is None:
        return samples
    calm = samples[waited <= CONTENDED_SHARE * samples]
    return calm if len(calm) >= min(MIN_CALLS, len(samples)) else None


@dataclass(frozen=True)
class Pair:
    """One row's judged calls on both sides, or the reason there are none."""

    base: np.ndarray | None = None
    new: np.ndarray | None = None
    contended: bool = False  # samples on both sides, but one side had too few calm calls

    @property
    def usable(self) -> bool:
        return self.base is not None and self.new is not None


@dataclass
class Drift:
    """The machine's drift per group: median new/base ratio of medians and of low quantiles, and the
    rows' judged calls (read once)."""

    p50: dict[Group, float]
    low: dict[Group, float]
    pairs: dict[SampleKey, Pair] = field(default_factory=dict)


def sample_key(r: Mapping[str, Any]) -> SampleKey | None:
    try:
        bs = int(float(r["batch_size"]))
    except (TypeError, ValueError):
        return None
    return SampleKey(str(r["model"]), str(r["format"]), str(r["runtime"]), str(r["compression"]), bs)


def read_pair(r: Mapping[str, Any], base: SampleReader | None, new: SampleReader | None) -> Pair:
    """The judged calls of one joined row on both sides (empty Pair without samples on both)."""
    key = sample_key(r)
    if key is None or base is None or new is None:
        return Pair()
    a, b = base(key), new(key)
    if a is None or b is None:
        return Pair()
    ja, jb = judged_calls(*a), judged_calls(*b)
    return Pair(ja, jb, contended=ja is None or jb is None)


def _median_ratio(pair: Pair, q: float) -> float:
    return _ratio(float(np.percentile(pair.new, q)), float(np.percentile(pair.base, q)))  # type: ignore[arg-type]


def group_drift(
    both: pd.DataFrame,
    base_samples: SampleReader | None = None,
    new_samples: SampleReader | None = None,
    min_rows: int = MIN_GROUP_ROWS,
) -> Drift:
    """Drift of each (batch_size, runtime) group with at least ``min_rows`` rows: their median ratio of
    judged-call medians (rows without samples: of the table's p50s; contended rows are left out), and
    of judged-call low quantiles (rows with samples on both sides)."""
    p50 = both[(both.metric == "latency_ms_p50") & (both.value_base > 0) & (both.value_new > 0)]
    drift = Drift({}, {})
    for (bs, runtime), sub in p50.groupby(["batch_size", "runtime"], sort=True):
        mids, lows = [], []
        for r in sub.to_dict("records"):
            pair = read_pair(r, base_samples, new_samples)
            key = sample_key(r)
            if key is not None:
                drift.pairs[key] = pair
            if pair.usable:
                mids.append(_median_ratio(pair, 50))
                lows.append(_median_ratio(pair, LOW_QUANTILE))
            elif not pair.contended:
                mids.append(_ratio(float(r["value_new"]), float(r["value_base"])))
        mids = [x for x in mids if 0 < x < math.inf]
        lows = [x for x in lows if 0 < x < math.inf]
        if len(mids) >= min_rows:
            drift.p50[(str(bs), str(runtime))] = float(np.median(mids))
        if len(lows) >= min_rows:
            drift.low[(str(bs), str(runtime))] = float(np.median(lows))
    return drift


def mann_whitney_p(base: np.ndarray, new: np.ndarray, factor: float) -> float:
    """One-sided p-value that ``new / factor`` is stochastically greater than ``base``."""
    return float(mannwhitneyu(new / factor, base, alternative="greater").pvalue)


def _sample_verdict(pair: Pair, tol: Tolerances, drift: Drift, group: Group) -> tuple[str, float | None]:
    """Rules 1-3 on the judged calls of a gated row."""
    base, new = pair.base, pair.new
    assert base is not None and new is not None
    factor = drift.p50.get(group, 1.0)
    ms_base, ms_new = float(np.median(base)), float(np.median(new))
    if _ratio(ms_new, ms_base) / factor <= tol.latency_ratio or ms_new / factor - ms_base < tol.latency_floor_ms:
        return "ok", None
    p = mann_whitney_p(base, new, factor)
    low = _median_ratio(pair, LOW_QUANTILE) / drift.low.get(group, 1.0)
    return ("REGRESSION" if p < tol.latency_alpha and low > tol.latency_ratio else "noise"), p


def latency_verdict(r: Mapping[str, Any], tol: Tolerances, drift: Drift) -> tuple[str, float | None]:
    """(verdict, p-value or None) of one joined latency/throughput row (its samples: ``drift.pairs``)."""
    metric, base, new = r["metric"], float(r["value_base"]), float(r["value_new"])
    group = (str(r["batch_size"]), str(r["runtime"]))
    factor = drift.p50.get(group, 1.0)
    if metric in SPREAD:
        return ("noisier (spread, not gated)" if _ratio(new, base) / factor > tol.latency_ratio else "ok"), None
    key = sample_key(r)
    pair = drift.pairs.get(key, Pair()) if key is not None else Pair()
    if metric in GATED and pair.contended:
        return CONTENDED, None
    if metric in GATED and pair.usable:
        return _sample_verdict(pair, tol, drift, group)
    ratio = (_ratio(new, base) if metric in LATENCY else _ratio(base, new)) / factor
    bs = 1.0 if r["batch_size"] in ("", None) or pd.isna(r["batch_size"]) else float(r["batch_size"])
    ms_base, ms_new = (base, new) if metric in LATENCY else (1e3 * _ratio(bs, base), 1e3 * _ratio(bs, new))
    if ratio <= tol.latency_ratio or ms_new / factor - ms_base < tol.latency_floor_ms:
        return "ok", None
    return ("REGRESSION" if metric in GATED else "slower (tail, not gated)"), None  # percentiles only: rule 1
