"""Latency verdicts that do not cry wolf on a shared machine.

A latency change is a regression only if, after dividing out the machine's drift,

1. the effect is large: the median-latency ratio new/base (throughput: base/new) exceeds
   ``latency_ratio`` and the slowdown is at least ``latency_floor_ms``; and, where both runs kept their
   raw per-call timings (:mod:`robustbench_cnn.runtime.samples`),
2. the fast calls slowed down too: the ratio of the ``LOW_QUANTILE`` (10th percentile) also exceeds
   ``latency_ratio``. Contention only ever adds time to some calls, so it moves the median but hardly
   the fast tail (``timeit``'s argument for its minimum), while slower code slows every call; and
3. a one-sided Mann-Whitney U test (Mann & Whitney 1947; scipy) finds the drift-corrected new samples
   stochastically greater than the base samples at ``latency_alpha``.

Without samples (old baselines store only percentiles) rule 1 alone decides.

Drift is estimated per (batch_size, runtime) group as the median new/base ratio of the group's rows
(of p50s, and of low quantiles): load from another process slows multi-threaded batch-64 kernels far
more than batch-1 calls (issue #14: one run-wide factor of x0.71 while batch-64 p50s moved up to x24,
5.6 -> 136 ms), so one run-wide factor both hides and invents regressions. A group needs
``MIN_GROUP_ROWS`` rows to estimate its drift; smaller groups are judged on raw ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from robustbench_cnn.runtime.samples import SampleKey

if TYPE_CHECKING:
    from robustbench_cnn.report.compare import Tolerances

LATENCY = {"latency_ms_p50", "latency_ms_p90", "latency_ms_p99"}
SPREAD = {"latency_ms_iqr", "latency_ms_std"}
GATED = {"latency_ms_p50", "throughput"}  # tail percentiles and spreads are reported, never gated: too noisy
TIMED = LATENCY | SPREAD | {"throughput"}
MIN_GROUP_ROWS = 3
LOW_QUANTILE = 10  # percent

Group = tuple[str, str]  # (batch_size, runtime) as they appear in the joined table's identity columns
SampleReader = Callable[[SampleKey], np.ndarray | None]


def _ratio(num: float, den: float) -> float:
    """num/den for non-negative numbers, with 0/0 = 1 and x/0 = inf."""
    if den > 0:
        return num / den
    return 1.0 if num <= 0 else math.inf


@dataclass(frozen=True)
class Drift:
    """The machine's drift per group: median new/base ratio of p50s and of low quantiles."""

    p50: dict[Group, float]
    low: dict[Group, float]


def group_drift(
    both: pd.DataFrame,
    base_samples: SampleReader | None = None,
    new_samples: SampleReader | None = None,
    min_rows: int = MIN_GROUP_ROWS,
) -> Drift:
    """Drift of each (batch_size, runtime) group with at least ``min_rows`` p50 rows (low quantiles:
    rows with samples on both sides)."""
    p50 = both[(both.metric == "latency_ms_p50") & (both.value_base > 0) & (both.value_new > 0)]
    drift = Drift({}, {})
    for (bs, runtime), sub in p50.groupby(["batch_size", "runtime"], sort=True):
        if len(sub) >= min_rows:
            drift.p50[(str(bs), str(runtime))] = float((sub.value_new / sub.value_base).median())
        ratios = [low_ratio(r, base_samples, new_samples) for r in sub.to_dict("records")]
        lows = [x for x in ratios if x is not None and 0 < x < math.inf]
        if len(lows) >= min_rows:
            drift.low[(str(bs), str(runtime))] = float(np.median(lows))
    return drift


def _samples(
    r: Mapping[str, Any], base: SampleReader | None, new: SampleReader | None
) -> tuple[np.ndarray, np.ndarray] | None:
    key = sample_key(r)
    if key is None or base is None or new is None:
        return None
    a, b = base(key), new(key)
    return None if a is None or b is None else (a, b)


def low_ratio(r: Mapping[str, Any], base: SampleReader | None, new: SampleReader | None) -> float | None:
    """New/base ratio of the rows' ``LOW_QUANTILE`` from raw samples, None without samples."""
    pair = _samples(r, base, new)
    if pair is None:
        return None
    return _ratio(float(np.percentile(pair[1], LOW_QUANTILE)), float(np.percentile(pair[0], LOW_QUANTILE)))


def sample_key(r: Mapping[str, Any]) -> SampleKey | None:
    try:
        bs = int(float(r["batch_size"]))
    except (TypeError, ValueError):
        return None
    return SampleKey(str(r["model"]), str(r["format"]), str(r["runtime"]), str(r["compression"]), bs)


def mann_whitney_p(base: np.ndarray, new: np.ndarray, factor: float) -> float:
    """One-sided p-value that ``new / factor`` is stochastically greater than ``base``."""
    return float(mannwhitneyu(new / factor, base, alternative="greater").pvalue)


def latency_verdict(
    r: Mapping[str, Any],
    tol: Tolerances,
    drift: Drift,
    base_samples: SampleReader | None = None,
    new_samples: SampleReader | None = None,
) -> tuple[str, float | None]:
    """(verdict, p-value or None) of one joined latency/throughput row."""
    metric, base, new = r["metric"], float(r["value_base"]), float(r["value_new"])
    group = (str(r["batch_size"]), str(r["runtime"]))
    factor = drift.p50.get(group, 1.0)
    if metric in SPREAD:
        return ("noisier (spread, not gated)" if _ratio(new, base) / factor > tol.latency_ratio else "ok"), None
    ratio = (_ratio(new, base) if metric in LATENCY else _ratio(base, new)) / factor
    bs = 1.0 if r["batch_size"] in ("", None) or pd.isna(r["batch_size"]) else float(r["batch_size"])
    ms_base, ms_new = (base, new) if metric in LATENCY else (1e3 * _ratio(bs, base), 1e3 * _ratio(bs, new))
    if ratio <= tol.latency_ratio or ms_new / factor - ms_base < tol.latency_floor_ms:
        return "ok", None
    if metric not in GATED:
        return "slower (tail, not gated)", None
    pair = _samples(r, base_samples, new_samples)
    if pair is None:
        return "REGRESSION", None  # percentiles only: rule 1 decides
    p = mann_whitney_p(pair[0], pair[1], factor)
    low = low_ratio(r, base_samples, new_samples) / drift.low.get(group, 1.0)  # type: ignore[operator]
    return ("REGRESSION" if p < tol.latency_alpha and low > tol.latency_ratio else "noise"), p
