"""Execute a suite: load data, train or load each model, measure it, write the results contract.

Output, under ``out_root/<suite>/<run_id>/``: ``results.csv`` (tidy rows, rewritten atomically
after every model so an interrupted run loses nothing it finished), ``manifest.json``
(provenance, cache use, wall time per stage) and ``summary.md``. ``out_root/<suite>/latest``
points at the newest finished run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

from robustbench_cnn.atomic import atomic_write_bytes
from robustbench_cnn.config.load import LoadedSuite
from robustbench_cnn.config.paths import run_root
from robustbench_cnn.contract.manifest import MANIFEST_FORMAT, RunManifest, environment, read_run_manifest, write_json
from robustbench_cnn.contract.verdicts import verdict_reasons
from robustbench_cnn.data import load_dataset
from robustbench_cnn.engine import crashes
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.devices import resolve_for_device
from robustbench_cnn.engine.execute import plan_run, surrogate_name, write_index
from robustbench_cnn.engine.pinned_training import train_pinned
from robustbench_cnn.engine.prepare import build, prepare_model
from robustbench_cnn.engine.run_record import RunRecord
from robustbench_cnn.engine.scheduler import LocalBackend, Scheduler
from robustbench_cnn.engine.store import CellStore
from robustbench_cnn.errors import InputError, RobustBenchError
from robustbench_cnn.locks import LockTimeout, file_lock
from robustbench_cnn.logs import run_log
from robustbench_cnn.models import Normalized
from robustbench_cnn.train.cache import ModelCache, load_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How to run a suite; ``None`` means "as the suite file says"."""

    out_root: Path
    cache_dir: Path
    device: str | None = None
    seed: int | None = None
    data_dir: Path | None = None
    progress: bool = True
    run_id: str | None = None
    resume: Path | None = None  # an earlier run directory of the same suite to continue
    executor: str = "local"  # local (in this process) | ray
    ray_address: str | None = None  # ray: an existing cluster ("auto"); default: start a local one
    gpus_per_cell: float = 1.0  # ray on a GPU cluster: the GPU share of each training/attack/certify task
    # a view of the finished table written into the run directory, also after a failed run (the CLI and
    # the API pass report.summary.write_summary for summary.md); the engine itself imports no view
    finish: Callable[[pd.DataFrame, RunManifest, Path], None] | None = None


@dataclass
class RunResult:
    run_dir: Path
    table: pd.DataFrame
    manifest: RunManifest


def resolve_device(requested: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` as a device with an explicit index (``cuda`` is the
    current CUDA device), so that device comparisons and ONNX Runtime's ``device_id`` are exact."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise RobustBenchError(f"device '{requested}': torch sees no CUDA device; use --device cpu or auto")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise RobustBenchError(f"device '{requested}': torch sees {torch.cuda.device_count()} CUDA device(s); "
                               f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")  # fmt: skip
    return torch.device("cuda", index)


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _update_latest(suite_dir: Path, run_id: str) -> None:
    link, tmp = suite_dir / "latest", suite_dir / f".latest-{run_id}"
    try:
        os.symlink(run_id, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:  # filesystems without symlinks: a one-line pointer file instead
        (suite_dir / "LATEST").write_text(run_id + "\n")


def run_local(ctx: RunContext, cache: ModelCache, record: RunRecord) -> None:
    """The in-process backend: prepare every model, then run (or reuse) the cells with the one
    :class:`~robustbench_cnn.engine.scheduler.Scheduler`, in plan order. A failing cell is recorded
    and skipped with its dependants; the others still run."""
    models: dict[str, Normalized] = {}
    keys: dict[str, str] = {}
    for m in ctx.spec.models:  # each cached as it finishes; derived models come after their sources
        found = crashes.signals(ctx.run_dir, f"prepare:{m.name}")
        if len(found) >= crashes.MAX_CRASHES:
            raise RobustBenchError(f"model '{m.name}': preparing it {crashes.killed_message(found)}; fix or remove it")
        with crashes.in_flight(ctx.run_dir, f"prepare:{m.name}", m.name, "prepare"):
            models[m.name], info = prepare_model(ctx, m, cache, models, keys)
        keys[m.name] = info["key"]
        record.model_prepared(m.name, info)
    planned = plan_run(ctx, record.manifest["models"])
    write_index(CellStore(ctx.run_dir), planned, record.manifest["suite_sha256"])
    targets = {}
    for mspec in ctx.spec.models:
        surrogate = surrogate_name(ctx.spec, mspec)
        targets[mspec.name] = ModelUnderTest(mspec, models[mspec.name], dict(record.manifest["models"][mspec.name]),
                                             models[surrogate] if surrogate else None)  # fmt: skip
    Scheduler(ctx, planned, record, LocalBackend(ctx, targets, planned, record)).run()


def newest_run(out_root: Path, suite: str) -> Path:
    """The most recent run directory of ``suite`` (run ids sort by start time)."""
    suite_dir = run_root(out_root, suite)
    runs = sorted(p for p in suite_dir.glob("*T*Z-*") if p.is_dir()) if suite_dir.is_dir() else []
    if not runs:
        raise RobustBenchError(f"--resume: no earlier run of suite '{suite}' under {out_root}")
    return runs[-1]


@contextmanager
def _run_lock(run_dir: Path):
    """Hold ``run_dir``'s lock; another process holding it (running or resuming the run) is an error."""
    held = ExitStack()
    try:
        held.enter_context(file_lock(run_dir / ".lock", timeout_s=0))
    except LockTimeout:
        raise InputError(f"{run_dir}: another robustbench-cnn process is running this run; wait for it to end, "
                         "then --resume it if it did not finish") from None  # fmt: skip
    with held:
        yield


def _reopen(run_dir: Path, suite: str) -> RunManifest:
    manifest = read_run_manifest(run_dir / "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("suite") != suite:
        found = manifest.get("suite") if isinstance(manifest, dict) else None
        raise RobustBenchError(f"--resume: {run_dir} is a run of suite '{found}', not '{suite}'")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"--resume: {run_dir}/manifest.json is format {manifest.get('format', 1)}, this version "
                         f"writes {MANIFEST_FORMAT}; start a new run (without --resume)")  # fmt: skip
    return manifest


def run_suite(loaded: LoadedSuite, opts: RunOptions) -> RunResult:
    """Run every model and evaluation of the suite; see the module docstring for outputs.
    ``performance.threads`` applies to torch for the run's duration."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if loaded.spec.performance.threads is not None:
        torch.set_num_threads(loaded.spec.performance.threads)
    try:
        return _run_suite(loaded, opts)
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark


def _sweep(run_dir: Path) -> None:
    """Remove what killed writers left in a run directory: ``.*.tmp`` files and ``tmp*`` export folders
    (called on ``--resume``, under the run's lock)."""
    for path in sorted(run_dir.rglob(".*.tmp")):
        path.unlink(missing_ok=True)
    for path in run_dir.glob("tmp*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _new_manifest(run_id: str, suite: str) -> RunManifest:
    return {"format": MANIFEST_FORMAT, "run_id": run_id, "suite": suite,
            "started": datetime.now(UTC).isoformat(timespec="seconds"), "environment": environment(),
            "stage_seconds": {}, "models": {}}  # fmt: skip


def _open_run(loaded: LoadedSuite, opts: RunOptions, held: ExitStack) -> tuple[Path, RunManifest]:
    """The run directory (new, or reopened by ``--resume``) with its lock held, and its manifest."""
    spec = loaded.spec
    suite_dir = run_root(opts.out_root, spec.name)  # refuses a name or link that leads outside --out
    if opts.resume is not None:
        run_dir = opts.resume
        held.enter_context(_run_lock(run_dir))  # before reading: a second --resume of one run exits 2
        _sweep(run_dir)
        if not (run_dir / "manifest.json").exists():  # stopped before its first manifest (e.g. a full disk)
            log.warning("%s has no manifest.json (the run stopped before writing one); starting it afresh", run_dir)
            return run_dir, _new_manifest(run_dir.name, spec.name)
        manifest = _reopen(run_dir, spec.name)
        manifest["resumed"] = [*manifest.get("resumed", []), datetime.now(UTC).isoformat(timespec="seconds")]
        manifest.update({"status": "running", "failed_cells": [], "environment": environment()})
        if manifest.get("suite_sha256") != loaded.sha256:
            log.warning("suite file changed since %s started; changed cells will be recomputed", manifest["run_id"])
        return run_dir, manifest
    run_id = opts.run_id or new_run_id()
    run_dir = suite_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    held.enter_context(_run_lock(run_dir))
    crashes.tell_supervisor(run_dir)
    return run_dir, _new_manifest(run_id, spec.name)


def build_context(loaded: LoadedSuite, opts: RunOptions) -> tuple[RunContext, float]:
    """The run's data and device-resolved suite, and every checkpoint fitted to its model: before any
    run directory exists, so bad data or a checkpoint that does not fit is one line with nothing written.
    Returns the context (``run_id``/``run_dir`` filled in once the directory is open) and the data seconds."""
    spec, start = loaded.spec, time.perf_counter()
    seed = spec.seed if opts.seed is None else opts.seed
    device = resolve_device(opts.device or spec.device)
    data = load_dataset(spec.dataset, opts.data_dir or loaded.resolve(spec.dataset.data_dir))
    resolved = resolve_for_device(spec, device, len(data.y_eval))
    ctx = RunContext(resolved, loaded.base_dir, "", seed, device, Path(), data, opts.progress, loaded.zoo_dir)
    seconds = time.perf_counter() - start
    for m in resolved.models:
        if m.checkpoint is not None:
            load_weights(build(ctx, m), ctx.checkpoint(m), m.checkpoint_format)
    return ctx, seconds


def _run_suite(loaded: LoadedSuite, opts: RunOptions) -> RunResult:
    ctx, data_seconds = build_context(loaded, opts)
    torch.backends.cudnn.benchmark = bool(ctx.spec.performance.cudnn_benchmark)  # resolved; run_suite restores it
    held = ExitStack()  # the run directory's lock, then its log file: released when the run ends
    run_dir, manifest = _open_run(loaded, opts, held)
    ctx = dataclasses.replace(ctx, run_id=manifest["run_id"], run_dir=run_dir)
    if loaded.path.is_file():  # the suite it runs, for edge bundle and report (a dict suite has no file)
        atomic_write_bytes(run_dir / "suite.toml", loaded.path.read_bytes())
    manifest.update({"suite_path": str(loaded.path), "suite_sha256": loaded.sha256, "seed": ctx.seed,
                     "device": str(ctx.device), "status": "running", "executor": opts.executor})  # fmt: skip
    manifest["models"] = {}  # rebuilt from the models and cells of this run
    data, spec = ctx.data, ctx.spec
    manifest["dataset"] = {"name": data.name, "train": len(data.y_train), "eval": len(data.y_eval),
                           "shape": list(data.x_eval.shape[1:]), "fingerprint": data.fingerprint}  # fmt: skip
    manifest["performance"] = {**spec.performance.model_dump(), "certify_runtime": spec.certify.runtime,
                               "certify_batch_size": spec.certify.batch_size}  # fmt: skip
    manifest["threat_models"] = [{"norm": n, "eps": e, "rule": rule} for n, e, rule in spec.headline()]
    record = RunRecord(run_dir, manifest)
    record.add_seconds("data", data_seconds)
    write_json(manifest, run_dir / "manifest.json")  # a killed run can be resumed from the start
    log.info("run %s of suite '%s' on %s -> %s", ctx.run_id, spec.name, ctx.device, run_dir)
    t0 = time.perf_counter()
    held.enter_context(run_log(run_dir, verbose=log.isEnabledFor(logging.DEBUG)))  # run.log: every logger's records
    try:
        start = time.perf_counter()
        trained = train_pinned(loaded.path, ctx, opts.cache_dir, opts.data_dir)
        if trained:  # the pinned training process's wall time, its start included
            record.add_seconds("train", time.perf_counter() - start)
        ctx = dataclasses.replace(ctx, pinned_trained=frozenset(trained))
        if opts.executor == "ray":
            from robustbench_cnn.engine.ray_executor import run_ray  # the Ray backend builds on this module

            run_ray(ctx, ModelCache(opts.cache_dir), record, opts)
        else:
            run_local(ctx, ModelCache(opts.cache_dir), record)
        manifest["status"] = "complete_with_errors" if manifest.get("failed_cells") else "complete"
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise
    except Exception as exc:
        manifest["status"] = "failed"
        manifest["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        with held:  # closed last: the summary's own warnings go to run.log too
            manifest["wall_seconds"] = round(time.perf_counter() - t0, 3)
            manifest["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
            table = record.table()
            manifest["verdicts"] = {m: {"reliable": not r, "reasons": r} for m, r in verdict_reasons(table).items()}
            record.save(table)
            if opts.finish is not None:
                opts.finish(table, manifest, run_dir)
    _update_latest(run_dir.parent, manifest["run_id"])
    return RunResult(run_dir, table, manifest)
