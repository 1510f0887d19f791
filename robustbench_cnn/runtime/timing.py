"""Latency measurement the way TFLite's ``benchmark_model`` reports it: warm-up, then timed runs.

Each call is timed on its own with ``time.perf_counter_ns``; the harness keeps running until it has
at least ``min_repeats`` samples *and* has spent ``budget_s`` seconds (or hit ``max_repeats``).
``sync`` (e.g. ``torch.cuda.synchronize``) is called after every run so asynchronous devices are
timed to completion. The raw per-call timings are kept (``LatencyStats.samples_ms``, float32 ms, in
call order) so that a regression gate can test two runs' distributions, not just their percentiles.

Beside each call's time the harness records how long the process's threads *waited for a CPU* in
that call's window (``LatencyStats.waited_ms``: the growth of the kernel's per-thread run-queue delay,
``/proc/self/task/*/schedstat``, summed over threads, from the end of the previous call to the end of
this one). With two intra-op threads and another process busy on the second core, a pool thread is
descheduled for the other process's whole time slice (4 ms at HZ=250) and every barrier waits for it:
the timings turn bimodal (e.g. 1.8 ms and 5.8 ms for one model), and which calls land in the slow mode
depends on the scheduler's phase, not on the code. Those calls are exactly the ones whose threads
waited (measured here: every slow call of 8 rows under a CPU hog had a run-queue wait, and a wait that
began just before a call is credited to it when the thread is scheduled back in, during the call), so
a gate can judge the code on the calls that did not wait. The reads happen between calls, outside the
timed window. Where the kernel does not expose run-queue delays (not Linux), ``waited_ms`` is None.
While fewer than ``min_repeats`` calls ran calm (waited at most ``CALM_SHARE`` of their time), the
harness keeps timing for up to ``CALM_EXTENSION`` more budgets, so a busy machine still yields calls
that measure the code; a quiet machine never pays for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

_TASKS = "/proc/self/task"
CALM_SHARE = 0.05  # a call whose threads waited for a CPU at most this share of its time ran calm
CALM_EXTENSION = 2.0  # extra budgets spent, at most, to collect min_repeats calm calls


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
    waited_ms: np.ndarray | None = field(default=None, repr=False, compare=False)  # float32, per call: CPU waits

    @property
    def throughput(self) -> float:
        """Images per second at the median latency."""
        return self.batch_size / (self.p50_ms / 1e3)


class RunQueueClock:
    """Total run-queue delay (ns) of this process's threads, read from their ``schedstat`` files.

    The files are opened once (after warm-up, when thread pools exist) and re-read with ``pread``, a
    microsecond per thread. ``available`` is False where the kernel does not provide them."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        try:
            tids = os.listdir(_TASKS)
        except OSError:
            return
        for tid in tids:
            try:
                self._fds.append(os.open(f"{_TASKS}/{tid}/schedstat", os.O_RDONLY))
            except OSError:
                continue  # a thread that ended meanwhile
        if self._fds and self.read() is None:
            self.close()

    @property
    def available(self) -> bool:
        return bool(self._fds)

    def read(self) -> int | None:
        """Sum of the threads' run-queue delays in ns (fields: on-CPU time, run-queue delay, slices)."""
        total = 0
        for fd in self._fds:
            try:
                fields = os.pread(fd, 128, 0).split()
                total += int(fields[1])
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended: its delays no longer grow
        return total if self._fds else None

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


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
    waits: list[int] = []
    clock = RunQueueClock()
    before = clock.read()
    calm = 0 if before is not None else min_repeats
    deadline = time.perf_counter() + budget_s
    extended = deadline + CALM_EXTENSION * budget_s

    def more() -> bool:
        now = time.perf_counter()
        return len(samples) < min_repeats or now < deadline or (calm < min_repeats and now < extended)

    while len(samples) < max_repeats and more():
        t0 = time.perf_counter_ns()
        run()
        if sync:
            sync()
        samples.append(time.perf_counter_ns() - t0)
        if before is not None:
            now = clock.read() or 0
            waits.append(max(now - before, 0))
            calm += waits[-1] <= CALM_SHARE * samples[-1]
            before = now
    clock.close()
    ms = np.asarray(samples, dtype=np.float64) / 1e6
    waited = np.asarray(waits, dtype=np.float32) / 1e6 if before is not None else None
    p25, p50, p75, p90, p99 = np.percentile(ms, [25, 50, 75, 90, 99])
    return LatencyStats(batch_size, float(p50), float(p90), float(p99), float(ms.mean()), len(samples),
                        iqr_ms=float(p75 - p25), std_ms=float(ms.std()), samples_ms=ms.astype(np.float32),
                        waited_ms=waited)  # fmt: skip
