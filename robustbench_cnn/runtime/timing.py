"""Latency measurement the way TFLite's ``benchmark_model`` reports it: warm-up, then timed runs.

Each call is timed on its own with ``time.perf_counter_ns``; the harness keeps running until it has
at least ``min_repeats`` samples *and* has spent ``budget_s`` seconds (or hit ``max_repeats``).
``sync`` (e.g. ``torch.cuda.synchronize``) is called after every run so asynchronous devices are
timed to completion. The raw per-call timings are kept (``LatencyStats.samples_ms``, float32 ms, in
call order) so that a regression gate can test two runs' distributions, not just their percentiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    batch_size: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    repeats: int
    iqr_ms: float = float("nan")  # p75 - p25: the spread of the timed calls
    std_ms: float = float("nan")
    samples_ms: np.ndarray | None = field(default=None, repr=False, compare=False)  # float32, call order

    @property
    def throughput(self) -> float:
        """Images per second at the median latency."""
        return self.batch_size / (self.p50_ms / 1e3)


def measure(
    run: Callable[[], object],
    batch_size: int,
    warmup: int = 5,
    min_repeats: int = 20,
    budget_s: float = 1.0,
    max_repeats: int = 10_000,
    sync: Callable[[], None] | None = None,
) -> LatencyStats:
    for _ in range(warmup):
        run()
    if sync:
        sync()
    samples: list[int] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < max_repeats and (len(samples) < min_repeats or time.perf_counter() < deadline):
        t0 = time.perf_counter_ns()
        run()
        if sync:
            sync()
        samples.append(time.perf_counter_ns() - t0)
    ms = np.asarray(samples, dtype=np.float64) / 1e6
    p25, p50, p75, p90, p99 = np.percentile(ms, [25, 50, 75, 90, 99])
    return LatencyStats(batch_size, float(p50), float(p90), float(p99), float(ms.mean()), len(samples),
                        iqr_ms=float(p75 - p25), std_ms=float(ms.std()), samples_ms=ms.astype(np.float32))  # fmt: skip
