"""Execute a suite: load data, train or load each model, measure it, write the results contract.

Output, under ``out_root/<suite>/<run_id>/``: ``results.csv`` (tidy rows, rewritten atomically
after every model so an interrupted run loses nothing it finished), ``manifest.json``
(provenance, cache use, wall time per stage) and ``summary.md``. ``out_root/<suite>/latest``
points at the newest finished run.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from robustbench_cnn.data import ImageDataset, load_dataset
from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.models import Normalized, build_model
from robustbench_cnn.suite import measure
from robustbench_cnn.suite.load import LoadedSuite
from robustbench_cnn.suite.manifest import environment, write_json
from robustbench_cnn.suite.results import Row, frame, write_csv
from robustbench_cnn.suite.spec import ModelSpec
from robustbench_cnn.train.cache import ModelCache, cache_key, load_weights
from robustbench_cnn.train.loop import train

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
    rows: list[Row] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            stages = self.manifest["stage_seconds"]
            stages[name] = round(stages.get(name, 0.0) + time.perf_counter() - start, 3)

    def save(self) -> pd.DataFrame:
        table = frame(self.rows)
        write_csv(table, self.run_dir / "results.csv")
        write_json(self.manifest, self.run_dir / "manifest.json")
        return table


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RobustBenchError("device 'cuda' requested but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(requested)


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _update_latest(suite_dir: Path, run_id: str) -> None:
    link, tmp = suite_dir / "latest", suite_dir / f".latest-{run_id}"
    try:
        os.symlink(run_id, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:  # filesystems without symlinks: a one-line pointer file instead
        (suite_dir / "LATEST").write_text(run_id + "\n")


def _train(ctx: _Context, spec: ModelSpec, model: Normalized, data: ImageDataset):
    args = (model, data.x_train, data.y_train, spec.train)
    kwargs = {"desc": f"train {spec.name}", "progress": ctx.progress}
    if spec.defense is None:
        return train(*args, ctx.seed, ctx.device, **kwargs)
    from robustbench_cnn.defenses import DEFENSES

    return DEFENSES.get(spec.defense.name)(*args, spec.defense, ctx.seed, ctx.device, **kwargs)


def _prepare_model(ctx: _Context, spec: ModelSpec, data: ImageDataset, cache: ModelCache) -> Normalized:
    torch.manual_seed(ctx.seed)  # the same seed gives the same initial weights
    model = build_model(spec.arch, data.num_classes, data.in_channels, data.mean, data.std, spec.params)
    info: dict[str, Any] = {"arch": spec.arch, "params": dict(spec.params), "defense": spec.defense_name}
    if spec.checkpoint is not None:
        path = ctx.loaded.resolve(spec.checkpoint)
        load_weights(model, path)
        info.update(source="checkpoint", weights=str(path))
    else:
        defense = spec.defense.model_dump() if spec.defense is not None else None
        key = cache_key(
            {
                "arch": spec.arch,
                "params": spec.params,
                "train": spec.train.model_dump(),
                "defense": defense,
                "seed": ctx.seed,
                "data": data.fingerprint(),
                "num_classes": data.num_classes,
            }
        )
        meta = cache.load(model, spec.arch, key)
        if meta is None:
            with ctx.stage("train"):
                tlog = _train(ctx, spec, model, data)
            meta = {"recipe": spec.train.model_dump(), "defense": defense, "seed": ctx.seed, "arch": spec.arch,
                    "params": spec.params, "train_seconds": round(tlog.seconds, 3), "epochs_run": tlog.epochs,
                    "final_train_acc": tlog.final_train_acc, "torch": torch.__version__}  # fmt: skip
            cache.store(model.cpu(), spec.arch, key, meta)
            info["cache"] = "miss"
        else:
            info["cache"] = "hit"
        info.update(source="cache", cache_key=key, weights=str(cache.entry(spec.arch, key)),
                    train_seconds=meta.get("train_seconds"))  # fmt: skip
    ctx.manifest["models"][spec.name] = info
    return model.to(ctx.device).eval()


def _surrogate(spec, mspec: ModelSpec, models: dict[str, Normalized]) -> Normalized | None:
    """The transfer-check surrogate: the suite's choice, else the first other undefended model."""
    if spec.checks.surrogate is not None:
        return models[spec.checks.surrogate] if spec.checks.surrogate != mspec.name else None
    for other in spec.models:
        if other.name != mspec.name and other.defense is None:
            return models[other.name]
    return None


def run_suite(loaded: LoadedSuite, opts: RunOptions) -> RunResult:
    """Run every model and evaluation of the suite; see the module docstring for outputs."""
    spec = loaded.spec
    seed = spec.seed if opts.seed is None else opts.seed
    device = resolve_device(opts.device or spec.device)
    run_id = opts.run_id or new_run_id()
    suite_dir = opts.out_root / spec.name
    run_dir = suite_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "suite": spec.name,
        "suite_path": str(loaded.path),
        "suite_sha256": loaded.sha256,
        "seed": seed,
        "device": str(device),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "running",
        "environment": environment(),
        "stage_seconds": {},
        "models": {},
    }
    ctx = _Context(loaded, run_id, seed, device, run_dir, opts.progress, manifest)
    log.info("run %s of suite '%s' on %s -> %s", run_id, spec.name, device, run_dir)
    t0 = time.perf_counter()
    try:
        with ctx.stage("data"):
            data_dir = opts.data_dir or loaded.resolve(spec.dataset.data_dir)
            data = load_dataset(spec.dataset, data_dir)
        manifest["dataset"] = {"name": data.name, "train": len(data.y_train), "eval": len(data.y_eval),
                               "shape": list(data.x_eval.shape[1:]), "fingerprint": data.fingerprint()}  # fmt: skip
        cache = ModelCache(opts.cache_dir)
        models = {m.name: _prepare_model(ctx, m, data, cache) for m in spec.models}  # cached as they finish
        for mspec in spec.models:
            ctx.rows += measure.measure_model(ctx, mspec, models[mspec.name], data, _surrogate(spec, mspec, models))
            ctx.save()  # nothing finished is lost if a later model fails or the run is interrupted
        manifest["status"] = "complete"
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise
    except Exception as exc:
        manifest["status"] = "failed"
        manifest["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        manifest["wall_seconds"] = round(time.perf_counter() - t0, 3)
        manifest["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        table = ctx.save()
        from robustbench_cnn.report.summary import write_summary

        write_summary(table, manifest, run_dir / "summary.md")
    _update_latest(suite_dir, run_id)
    return RunResult(run_dir, table, manifest)
