"""Execute a suite: load data, train or load each model, measure it, write the results contract.

Output, under ``out_root/<suite>/<run_id>/``: ``results.csv`` (tidy rows, rewritten atomically
after every model so an interrupted run loses nothing it finished), ``manifest.json``
(provenance, cache use, wall time per stage) and ``summary.md``. ``out_root/<suite>/latest``
points at the newest finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from robustbench_cnn.atomic import atomic_write_bytes
from robustbench_cnn.data import ImageDataset, load_dataset
from robustbench_cnn.errors import InputError, RobustBenchError
from robustbench_cnn.locks import LockTimeout, file_lock
from robustbench_cnn.logs import run_log
from robustbench_cnn.models import Normalized, build_model
from robustbench_cnn.suite import measure
from robustbench_cnn.suite.cells import Cell, CellStore, plan
from robustbench_cnn.suite.device_defaults import resolve_for_device
from robustbench_cnn.suite.load import LoadedSuite
from robustbench_cnn.suite.manifest import environment, write_json
from robustbench_cnn.suite.paths import run_root
from robustbench_cnn.suite.plan_cmd import model_identity
from robustbench_cnn.suite.results import frame, write_csv
from robustbench_cnn.suite.spec import ModelSpec
from robustbench_cnn.train.cache import ModelCache, cache_key, code_fingerprint, load_weights
from robustbench_cnn.train.loop import to_device, train

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


@dataclass
class RunResult:
    run_dir: Path
    table: pd.DataFrame
    manifest: dict[str, Any]


@dataclass
class _Context:
    loaded: LoadedSuite
    run_id: str
    seed: int
    device: torch.device
    run_dir: Path
    progress: bool
    manifest: dict[str, Any]
    frames: list[pd.DataFrame] = field(default_factory=list)
    cells_computed: int = 0
    cells_reused: int = 0
    attackers: dict[str, torch.nn.Module] = field(default_factory=dict)  # model name -> module attacks craft on
    attack_batches: dict[str, int] = field(default_factory=dict)  # model name -> images per attack batch

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            stages = self.manifest["stage_seconds"]
            stages[name] = round(stages.get(name, 0.0) + time.perf_counter() - start, 3)

    def save(self) -> pd.DataFrame:
        self.manifest["cells"] = {"computed": self.cells_computed, "reused": self.cells_reused,
                                  "failed": len(self.manifest.get("failed_cells", []))}  # fmt: skip
        frames = [f for f in self.frames if not f.empty]
        table = pd.concat(frames, ignore_index=True) if frames else frame([])
        write_csv(table, self.run_dir / "results.csv")
        write_json(self.manifest, self.run_dir / "manifest.json")
        return table


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


def _train(ctx: _Context, spec: ModelSpec, model: Normalized, data: ImageDataset, models: dict[str, Normalized]):
    """Train ``model`` by the entry's recipe and defense, or derive it by its compression step."""

    def finetune(net: Normalized, loss_fn=None):
        args = (net, data.x_train, data.y_train, spec.train)
        kwargs: dict[str, Any] = {"desc": f"train {spec.name}", "progress": ctx.progress}
        if spec.defense is None:
            return train(*args, ctx.seed, ctx.device, **kwargs, loss_fn=loss_fn)
        from robustbench_cnn.defenses import DEFENSES

        return DEFENSES.get(spec.defense.name)(*args, spec.defense, ctx.seed, ctx.device, **kwargs)

    if spec.compress is None:
        return finetune(model)
    from robustbench_cnn.compress import COMPRESSORS, CompressJob

    job = CompressJob({u: models[u] for u in spec.compress.upstream}, data, finetune, ctx.seed, ctx.device,
                      ctx.progress)  # fmt: skip
    return COMPRESSORS.get(spec.compress.name)(model, spec.compress, job)


def _prepare_model(
    ctx: _Context, spec: ModelSpec, data: ImageDataset, cache: ModelCache, models: dict[str, Normalized]
) -> Normalized:
    """Build the model and fill it from its checkpoint, the cache, or by training (``models``: the
    entries prepared so far, which a compression step may start from)."""
    torch.manual_seed(ctx.seed)  # the same seed gives the same initial weights
    model = build_model(
        spec.arch,
        data.num_classes,
        data.in_channels,
        data.mean,
        data.std,
        spec.params,
        base_dir=ctx.loaded.base_dir,
        image_size=data.image_size,
    )
    to_device(model, ctx.device)  # before a defense or compression step builds anything on it
    info: dict[str, Any] = {"arch": spec.arch, "params": dict(spec.params), "defense": spec.defense_name,
                            "compression": spec.compression}  # fmt: skip
    if spec.checkpoint is not None:
        path = (ctx.loaded.base_dir / spec.checkpoint).resolve()  # checked at load: a file, relative to the suite
        load_weights(model, path, spec.checkpoint_format)
        info.update(source="checkpoint", weights=str(path), key=hashlib.sha256(path.read_bytes()).hexdigest()[:20])
    else:
        defense = spec.defense.model_dump() if spec.defense is not None else None
        upstream = [ctx.manifest["models"][u]["key"] for u in spec.compress.upstream] if spec.compress else []
        code = code_fingerprint(spec.arch, ctx.loaded.spec.plugins, ctx.loaded.base_dir)
        identity = model_identity(spec, ctx.seed, data.fingerprint, data.num_classes, upstream, code)
        key = cache_key(identity)
        with cache.lock(spec.arch, key):  # one run or worker trains a key; the others wait, then hit
            meta = cache.load(model, spec.arch, key)
            if meta is None:
                with ctx.stage("train"):
                    tlog = _train(ctx, spec, model, data, models)
                meta = {"recipe": spec.train.model_dump(), "defense": defense, "seed": ctx.seed, "arch": spec.arch,
                        "compress": identity.get("compress"), "upstream": identity.get("upstream"),
                        "params": spec.params, "train_seconds": round(tlog.seconds, 3), "epochs_run": tlog.epochs,
                        "final_train_acc": tlog.final_train_acc, "torch": torch.__version__}  # fmt: skip
                cache.store(model.cpu(), spec.arch, key, meta)
                info["cache"] = "miss"
            else:
                info["cache"] = "hit"
        info.update(source="cache", key=key, weights=str(cache.entry(spec.arch, key)),
                    train_seconds=meta.get("train_seconds"), final_train_acc=meta.get("final_train_acc"))  # fmt: skip
    ctx.manifest["models"].setdefault(spec.name, {}).update(info)
    to_device(model, ctx.device).eval()  # NHWC: faster convs, same values
    return model


def _run_cells(ctx: _Context, mspec: ModelSpec, model, data: ImageDataset, store: CellStore, surrogate) -> None:
    """Run (or reuse) every cell of one model. A failing cell is recorded and skipped with its
    dependents; the others still run. Each finished cell is stored at once."""
    key = ctx.manifest["models"][mspec.name]["key"]
    surrogate_key = "" if surrogate is None else ctx.manifest["models"][surrogate[0]]["key"]
    arrays: dict[str, dict[str, torch.Tensor]] = {}  # cell label -> its stored arrays
    failed: set[str] = set()
    index = ctx.manifest["models"][mspec.name].setdefault("cells", {})  # what edge bundle and report read
    for cell in plan(ctx.loaded.spec, mspec):
        cid = cell.cell_id(key, data.fingerprint, ctx.seed, surrogate_key)
        index[cell.label] = {"id": cid, "kind": cell.kind, "params": dict(cell.params)}
        if any(d in failed for d in cell.deps):
            _record_failure(ctx, mspec, cell, cid, "skipped: a cell it depends on failed")
            failed.add(cell.label)
            continue
        reused = store.load_if_done(cid)
        if reused is not None:
            table, outputs = reused
            ctx.cells_reused += 1
        else:
            try:
                start = time.perf_counter()
                with ctx.stage(cell.kind):
                    rows, outputs = measure.EXECUTORS[cell.kind](
                        ctx, mspec, model, data, cell, arrays, surrogate[1] if surrogate else None
                    )
                table = frame(rows)
                seconds = ctx.manifest["models"][mspec.name].setdefault("cell_seconds", {})
                seconds[cell.label] = round(time.perf_counter() - start, 3)
            except Exception as exc:  # recorded; the rest of the run goes on
                log.error("%s %s failed: %s: %s", mspec.name, cell.label, type(exc).__name__, exc)
                _record_failure(ctx, mspec, cell, cid, f"{type(exc).__name__}: {exc}")
                failed.add(cell.label)
                continue
            store.save(cid, table, outputs)
            ctx.cells_computed += 1
        arrays[cell.label] = outputs
        ctx.frames.append(table)
        ctx.save()
    ctx.attackers.pop(mspec.name, None)


def _record_failure(ctx: _Context, mspec: ModelSpec, cell: Cell, cid: str, message: str) -> None:
    ctx.manifest.setdefault("failed_cells", []).append(
        {"model": mspec.name, "cell": cell.label, "id": cid, "status": "error", "error": message}
    )


def _surrogate(spec, mspec: ModelSpec, models: dict[str, Normalized]) -> tuple[str, Normalized] | None:
    """The transfer-check surrogate (name, model): the suite's choice, else the first other undefended model."""
    name = spec.checks.surrogate
    if name is None:
        name = next((o.name for o in spec.models if o.name != mspec.name and o.defense is None), None)
    return None if name is None or name == mspec.name else (name, models[name])


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


def _reopen(run_dir: Path, suite: str) -> tuple[Path, dict[str, Any]]:
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RobustBenchError(f"--resume: {run_dir} has no readable manifest.json ({exc})") from None
    if manifest.get("suite") != suite:
        raise RobustBenchError(f"--resume: {run_dir} is a run of suite '{manifest.get('suite')}', not '{suite}'")
    return run_dir, manifest


def run_suite(loaded: LoadedSuite, opts: RunOptions) -> RunResult:
    """Run every model and evaluation of the suite; see the module docstring for outputs.
    ``performance.threads`` applies to torch for the run's duration."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if loaded.spec.performance.threads is not None:
        torch.set_num_threads(loaded.spec.performance.threads)
    torch.backends.cudnn.benchmark = loaded.spec.performance.cudnn_benchmark  # CUDA only: fastest conv algorithms
    try:
        return _run_suite(loaded, opts)
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark


def _run_suite(loaded: LoadedSuite, opts: RunOptions) -> RunResult:
    spec = loaded.spec
    seed = spec.seed if opts.seed is None else opts.seed
    device = resolve_device(opts.device or spec.device)
    suite_dir = run_root(opts.out_root, spec.name)  # refuses a name or link that leads outside --out
    held = ExitStack()  # the run directory's lock, then its log file: released when the run ends
    if opts.resume is not None:
        held.enter_context(_run_lock(opts.resume))  # before reading: a second --resume of one run exits 2
        run_dir, manifest = _reopen(opts.resume, spec.name)
        run_id = manifest["run_id"]
        manifest["resumed"] = [*manifest.get("resumed", []), datetime.now(UTC).isoformat(timespec="seconds")]
        manifest.update(status="running", failed_cells=[], environment=environment())
        if manifest.get("suite_sha256") != loaded.sha256:
            log.warning("suite file changed since %s started; changed cells will be recomputed", run_id)
    else:
        run_id = opts.run_id or new_run_id()
        run_dir = suite_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=False)
        held.enter_context(_run_lock(run_dir))
        manifest = {
            "run_id": run_id,
            "suite": spec.name,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "environment": environment(),
            "stage_seconds": {},
            "models": {},
        }
    if loaded.path.is_file():  # the suite it runs, for edge bundle and report (a dict suite has no file)
        atomic_write_bytes(run_dir / "suite.toml", loaded.path.read_bytes())
    manifest.update(suite_path=str(loaded.path), suite_sha256=loaded.sha256, seed=seed, device=str(device))
    manifest["status"] = "running"
    ctx = _Context(loaded, run_id, seed, device, run_dir, opts.progress, manifest)
    write_json(manifest, run_dir / "manifest.json")  # a killed run can be resumed from the start
    log.info("run %s of suite '%s' on %s -> %s", run_id, spec.name, device, run_dir)
    t0 = time.perf_counter()
    logs = held
    logs.enter_context(run_log(run_dir, verbose=log.isEnabledFor(logging.DEBUG)))  # run.log: every logger's records
    try:
        with ctx.stage("data"):
            data_dir = opts.data_dir or loaded.resolve(spec.dataset.data_dir)
            data = load_dataset(spec.dataset, data_dir)
        manifest["dataset"] = {"name": data.name, "train": len(data.y_train), "eval": len(data.y_eval),
                               "shape": list(data.x_eval.shape[1:]), "fingerprint": data.fingerprint}  # fmt: skip
        ctx.loaded = loaded = dataclasses.replace(loaded, spec=resolve_for_device(spec, device, len(data.y_eval)))
        spec = loaded.spec
        manifest["performance"] = {**spec.performance.model_dump(), "certify_runtime": spec.certify.runtime,
                                   "certify_batch_size": spec.certify.batch_size}  # fmt: skip
        cache = ModelCache(opts.cache_dir)
        models: dict[str, Normalized] = {}
        for m in spec.models:  # each cached as it finishes; derived models come after their sources
            models[m.name] = _prepare_model(ctx, m, data, cache, models)
        store = CellStore(run_dir)
        for mspec in spec.models:
            _run_cells(ctx, mspec, models[mspec.name], data, store, _surrogate(spec, mspec, models))
        manifest["status"] = "complete_with_errors" if manifest.get("failed_cells") else "complete"
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise
    except Exception as exc:
        manifest["status"] = "failed"
        manifest["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        with logs:  # closed last: the summary's own warnings go to run.log too
            manifest["wall_seconds"] = round(time.perf_counter() - t0, 3)
            manifest["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
            table = ctx.save()
            from robustbench_cnn.report.summary import write_summary

            write_summary(table, manifest, run_dir / "summary.md")
    _update_latest(run_dir.parent, run_id)
    return RunResult(run_dir, table, manifest)
