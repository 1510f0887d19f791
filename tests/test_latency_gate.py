"""The latency gate on real timings: a busy machine is not a regression, a 2x slower model is, at 1 and
at 2 intra-op threads.

Four small CNNs are timed at batch 1 and 16 with the project's harness, their rows, raw samples and
per-call CPU waits written as a run directory, and compared with the CLI. With two threads on a 2-core
machine whose other core is hogged, a pool thread is descheduled for the hog's time slice and the
calls it stalls take ~4 ms longer (bimodal timings; which calls depends on the scheduler's phase, and
one row's p50 moved x2.2 while its neighbour's did not): the gate leaves out the calls whose threads
waited for a CPU. The "quiet" runs share the machine with whatever else runs on it (other tests, other
work): the verdicts must hold under that too, which is what the recorded waits are for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_cnn.cli.main import main
from robustbench_cnn.contract.manifest import environment, write_json
from robustbench_cnn.contract.results import Row, frame, read_csv, write_csv
from robustbench_cnn.models.build import build_model
from robustbench_cnn.report.compare import Run, compare, load_run
from robustbench_cnn.report.latency_gate import CONTENDED
from robustbench_cnn.report.tolerances import Tolerances
from robustbench_cnn.runtime.samples import SampleKey, read_samples, read_waited, samples_dir, write_samples
from robustbench_cnn.runtime.timing import RunQueueClock, measure
from robustbench_cnn.runtime.torch_runtime import torch_latency

BATCH_SIZES = (1, 16)
THREADS = (1, pytest.param(2, marks=pytest.mark.slow))  # 2 threads: 5-90 s when other work loads the machine
HAS_WAITS = RunQueueClock().available  # Linux: the kernel's per-thread run-queue delays


class Twice(nn.Module):
    """A real 2x slowdown: the wrapped model's forward runs twice."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.net(x)
        return self.net(x)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {f"cnn_w{w}": build_model("simple_cnn", 10, 1, [0.5], [0.25], {"width": w, "stages": 2}).eval()
            for w in (8, 12, 16, 24)}  # fmt: skip


@pytest.fixture(scope="module")
def env() -> dict:
    return environment()


@contextmanager
def cpu_hog() -> Iterator[None]:
    """A busy-looping process on the last core for the duration of the block."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(hog.pid, {(os.cpu_count() or 1) - 1})
        time.sleep(0.2)
        yield
        assert hog.poll() is None  # the hog ran for the whole block
    finally:
        hog.kill()
        hog.wait(timeout=10)


def measure_run(run_dir, models: dict[str, nn.Module], env: dict, threads: int) -> None:
    """Time every model with the harness at ``threads`` intra-op threads and write results.csv,
    manifest.json and latency_samples/ (timings and per-call CPU waits), as a suite run does."""
    run_dir.mkdir(exist_ok=True)  # samples_dir() of a path that is not a directory is a CSV's sibling
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = []
        for name, net in models.items():
            for s in torch_latency(net, (1, 16, 16), BATCH_SIZES, torch.device("cpu"), 3, 20, 0.15):
                rows += [Row(run_id=run_dir.name, suite="gate", dataset="digits", model=name, arch="simple_cnn",
                             metric=metric, value=value, n=s.repeats, batch_size=s.batch_size)
                         for metric, value in (("latency_ms_p50", s.p50_ms), ("latency_ms_p90", s.p90_ms),
                                               ("latency_ms_iqr", s.iqr_ms), ("throughput", s.throughput))]  # fmt: skip
                key = SampleKey(name, "torch", "torch", "none", s.batch_size)
                write_samples(samples_dir(run_dir), key, s.samples_ms, s.waited_ms)  # type: ignore[arg-type]
    finally:
        torch.set_num_threads(before)
    write_csv(frame(rows), run_dir / "results.csv")
    write_json({"environment": {**env, "torch_threads": threads}}, run_dir / "manifest.json")


class BaseRuns(dict):
    """The quiet baseline run per thread count, measured when a test first asks for it."""

    def __init__(self, factory, models: dict[str, nn.Module], env: dict) -> None:
        super().__init__()
        self.factory, self.models, self.env = factory, models, env

    def __missing__(self, threads: int):
        run = self[threads] = self.factory.mktemp(f"base{threads}")
        measure_run(run, self.models, self.env, threads)
        return run


@pytest.fixture(scope="module")
def base_runs(tmp_path_factory, models, env) -> BaseRuns:
    return BaseRuns(tmp_path_factory, models, env)


def test_samples_and_waits_are_stored_per_latency_row(base_runs):
    run = base_runs[1]
    table = read_csv(run / "results.csv")
    p50 = table[table.metric == "latency_ms_p50"]
    assert len(p50) == 4 * len(BATCH_SIZES)
    for _, r in p50.iterrows():
        key = SampleKey(r.model, r.format, r.runtime, r.compression, int(r.batch_size))
        samples = read_samples(samples_dir(run), key)
        assert samples is not None and len(samples) == r.n and np.median(samples) == pytest.approx(r.value, rel=1e-5)
        waited = read_waited(samples_dir(run), key, len(samples))
        assert (waited is not None) == HAS_WAITS
    files = sorted(p.name for p in samples_dir(run).iterdir())
    assert len(files) == len(p50) * (2 if HAS_WAITS else 1) and all(f.endswith(".npy") for f in files)


@pytest.mark.skipif(not HAS_WAITS or not hasattr(os, "sched_setaffinity"), reason="needs Linux run-queue delays")
def test_the_harness_records_the_waits_another_process_causes():
    """Our thread and a hog pinned to one core: the calls the hog stalls are those that record a wait,
    and the calls without one run as fast as calls do alone."""
    core = {sorted(os.sched_getaffinity(0))[0]}
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, core)
    try:
        work = lambda: sum(range(20_000))  # noqa: E731  # ~0.5 ms of pure Python
        alone = measure(work, 1, warmup=3, min_repeats=50, budget_s=0.1)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            os.sched_setaffinity(hog.pid, core)
            time.sleep(0.1)
            shared = measure(work, 1, warmup=3, min_repeats=50, budget_s=0.3)
        finally:
            hog.kill()
            hog.wait(timeout=10)
    finally:
        os.sched_setaffinity(0, mine)
    t, w = shared.samples_ms, shared.waited_ms
    assert t is not None and w is not None and len(w) == len(t)
    waited = w > 0.05 * t
    assert waited.sum() >= 5, "the hog shared our core, so some calls waited for it"
    assert np.median(t[waited]) > 2 * np.median(t[~waited])  # the waits are where the time went
    assert np.median(t[~waited]) < 1.5 * alone.p50_ms


def p50_verdicts(base, new, tol: Tolerances) -> dict[tuple[str, str], str]:
    joined = compare(load_run(base), load_run(new), tol)[0]
    p50 = joined[joined.metric == "latency_ms_p50"]
    return {(m, bs): v for m, bs, v in zip(p50.model, p50.batch_size, p50.verdict, strict=True)}


@pytest.mark.parametrize("threads", THREADS)
def test_busy_machine_is_not_a_regression(base_runs, models, env, tmp_path, capsys, threads):
    """(a) the same models, timed again while a CPU hog spins on the other core: 0 regressions, and
    rows are judged (on their calm calls), not waved through. When other work saturates both cores,
    even the baseline's calls all wait (0.5 ms calls took 200 ms here): every attempt must show 0
    regressions, and the pair is re-measured, up to 3 times, until at least 2 rows can be judged."""
    base = base_runs[threads]
    for attempt in range(3):
        new = tmp_path / f"hog{attempt}"
        with cpu_hog():
            measure_run(new, models, env, threads)
        assert main(["compare", str(base), str(new)]) == 0
        out = capsys.readouterr().out
        assert "**0 regression(s)**" in out and "Mann-Whitney" in out
        verdicts = p50_verdicts(base, new, Tolerances())
        if sum(v != CONTENDED for v in verdicts.values()) >= 2:
            break
        base = tmp_path / f"base{attempt}"  # the baseline may have been the saturated one
        measure_run(base, models, env, threads)
    else:
        pytest.skip(f"fewer than 2 rows with calm calls in 3 attempts: the machine is saturated ({verdicts})")


@pytest.mark.parametrize("threads", THREADS)
def test_a_model_twice_as_slow_is_reported(base_runs, models, env, tmp_path, capsys, threads):
    """(b) one model's forward runs twice (a real 2x): reported, and only that model. The default
    --latency-ratio tolerates 2.0x, so the test asks for 1.4x (the margin covers the group drift's own
    noise, up to x1.25 at batch 1 here); these models take < 0.5 ms at batch 1, hence the lower floor.
    A row none of whose calls ran calm (a machine saturated by other work) cannot be judged: both runs
    are re-measured, up to 3 times, until one of cnn_w16's rows can be. A fresh CI machine's timings
    once showed the 2x as x1.29-1.36 against its group's drift (a noisy pair of runs): a pair that
    flags nothing is re-measured too, up to 3 times; any pair that flags another model fails at once."""
    slow = {**models, "cnn_w16": Twice(models["cnn_w16"])}
    tol = Tolerances(latency_ratio=1.4, latency_floor_ms=0.05)
    base, judged, out = base_runs[threads], False, ""
    for attempt in range(3):
        run = tmp_path / f"slow{attempt}"
        measure_run(run, slow, env, threads)
        verdicts = p50_verdicts(base, run, tol)
        if any(v != CONTENDED for (m, _), v in verdicts.items() if m == "cnn_w16"):
            judged = True
            code = main(["compare", str(base), str(run), "--latency-ratio", "1.4", "--latency-floor-ms", "0.05"])
            out = capsys.readouterr().out
            flagged = [ln for ln in out.splitlines() if "REGRESSION" in ln]
            assert all("cnn_w16" in ln for ln in flagged), out  # never another model
            if code == 1 and flagged:
                return
        base = tmp_path / f"base{attempt}"  # the baseline may have been the saturated (or noisy) one
        measure_run(base, models, env, threads)
    if not judged:
        pytest.skip(f"no calm calls of cnn_w16 in 3 runs: the machine is saturated ({verdicts})")
    pytest.fail(f"a 2x slower cnn_w16 was not reported in 3 pairs of runs:\n{out}")


def test_drift_is_per_batch_size_and_runtime():
    """Batch-1 rows ran faster and batch-64 rows 3x slower: no regression (one run-wide factor, the
    median x1.73 here, flagged every batch-64 row); one model 3x slower on top of its group is."""

    def run(speed: dict[int, float], slow_model: str | None = None) -> Run:
        rows = []
        for m in ("a", "b", "c", "d"):
            for bs, ms in ((1, 1.0), (64, 20.0)):
                value = ms * speed[bs] * (3.0 if m == slow_model and bs == 64 else 1.0)
                rows.append(Row(run_id="r", suite="s", dataset="d", model=m, arch="x", metric="latency_ms_p50",
                                value=value, n=50, batch_size=bs))  # fmt: skip
        return Run(frame(rows), {"cpu": "x"}, "mem")

    base = run({1: 1.0, 64: 1.0})
    joined, *_ = compare(base, run({1: 0.7, 64: 3.0}), Tolerances())
    assert set(joined.verdict) == {"ok"}
    assert joined.attrs["machine_factors"] == {("1", "torch"): pytest.approx(0.7), ("64", "torch"): pytest.approx(3.0)}
    joined, *_ = compare(base, run({1: 0.7, 64: 3.0}, slow_model="c"), Tolerances())
    flagged = joined[joined.verdict == "REGRESSION"]
    assert flagged.model.tolist() == ["c"] and flagged.batch_size.tolist() == ["64"]


def test_a_corrupt_samples_file_is_one_line_exit_2(base_runs, tmp_path, capsys):
    import shutil

    base_run = base_runs[1]
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy)
    victim = next(samples_dir(copy).iterdir())
    victim.write_bytes(b"\x93NUMPY garbage")
    assert main(["compare", str(base_run), str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and victim.name in err and "re-run the latency cell" in err


def _synthetic_run(run_dir, times: dict[str, np.ndarray], waits: dict[str, np.ndarray] | None) -> None:
    """A run directory whose latency rows and samples are the given per-call timings (batch 1)."""
    run_dir.mkdir()
    rows = []
    for model, t in times.items():
        rows.append(Row(run_id=run_dir.name, suite="gate", dataset="digits", model=model, arch="x",
                        metric="latency_ms_p50", value=float(np.median(t)), n=len(t), batch_size=1))  # fmt: skip
        key = SampleKey(model, "torch", "torch", "none", 1)
        write_samples(samples_dir(run_dir), key, t, None if waits is None else waits[model])
    write_csv(frame(rows), run_dir / "results.csv")
    write_json({"environment": {"cpu": "x", "torch_threads": 2}}, run_dir / "manifest.json")


def test_stalled_calls_are_left_out_and_a_row_without_calm_calls_is_not_judged(tmp_path, capsys):
    """The bimodal timings of a hogged 2-thread run, as measured here: calls either run at their quiet
    time or wait ~4 ms for a descheduled pool thread. Model "b" stalled on 110 of its 120 calls, so even
    its p10 is a stalled call: judged on all calls it is a x4.6 regression (what the gate reported
    before); on its 10 calm calls it is not. Model "d" stalled on every call: not judged, and said so.
    A baseline without recorded waits still compares (all its calls judged)."""
    rng = np.random.default_rng(0)
    calls = 120
    quiet = {m: rng.normal(ms, 0.01 * ms, calls).astype(np.float32)
             for m, ms in zip("abcd", (0.3, 1.1, 1.7, 4.0), strict=True)}  # fmt: skip
    hogged, waited = {}, {}
    for m, calm in zip("abcd", (108, 10, 84, 0), strict=True):
        stalled = np.ones(calls, bool)
        stalled[rng.choice(calls, calm, replace=False)] = False
        waited[m] = np.where(stalled, rng.uniform(3.9, 4.1, calls), 0.0).astype(np.float32)
        hogged[m] = quiet[m] * rng.uniform(0.98, 1.05, calls).astype(np.float32) + waited[m]
    _synthetic_run(tmp_path / "base", quiet, {m: np.zeros(calls, np.float32) for m in quiet})
    _synthetic_run(tmp_path / "hog", hogged, waited)
    _synthetic_run(tmp_path / "old", quiet, None)  # a baseline from before waits were recorded
    tol = Tolerances(latency_ratio=1.4, latency_floor_ms=0.05)
    assert p50_verdicts(tmp_path / "base", tmp_path / "hog", tol) == {
        ("a", "1"): "ok", ("b", "1"): "ok", ("c", "1"): "ok", ("d", "1"): CONTENDED}  # fmt: skip
    for base in ("base", "old"):
        assert main(["compare", str(tmp_path / base), str(tmp_path / "hog"), "--latency-ratio", "1.4"]) == 0
        out = capsys.readouterr().out
        assert "**0 regression(s)**" in out and "1 row(s) had too few calls left and are not judged" in out
    no_waits = tmp_path / "hog_no_waits"
    _synthetic_run(no_waits, hogged, None)  # the same timings judged on every call: b is flagged
    assert p50_verdicts(tmp_path / "base", no_waits, tol)[("b", "1")] == "REGRESSION"
