"""What a Ray worker runs for ``--executor ray`` (:mod:`.ray_executor`): prepare a model, or compute
one cell or one shard into the run directory. Each worker process keeps the run context and the
models it loaded, so later tasks of the same run start at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robustbench_cnn.engine.cells import Shard
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.execute import PlannedCell, compute, load_inputs, run_shard, surrogate_name
from robustbench_cnn.engine.prepare import load_prepared, prepare_model
from robustbench_cnn.engine.store import CellStore
from robustbench_cnn.registry import load_plugins
from robustbench_cnn.train.cache import ModelCache

_contexts: dict[str, RunContext] = {}  # run directory -> context, per worker process
_targets: dict[tuple[str, str, str], ModelUnderTest] = {}  # (run directory, model, key) -> loaded model


def _context(context: list, cpus: int, gpus: float) -> RunContext:
    """The run context (resolved once per worker), with torch's threads set to the task's CPUs and,
    on a GPU, the task's device (Ray exposes its GPU as ``cuda:0``) and memory share."""
    import ray

    torch.set_num_threads(max(1, cpus))
    key = str(context[0])
    if key not in _contexts:
        ctx: RunContext = ray.get(context[0])
        load_plugins(ctx.spec.plugins, ctx.base_dir)  # the suite's own modules, as in the driver
        if ctx.device.type == "cuda":
            ctx = dataclasses.replace(ctx, device=torch.device("cuda", 0))
        _contexts[key] = dataclasses.replace(ctx, progress=False)
    ctx = _contexts[key]
    torch.backends.cudnn.benchmark = bool(ctx.spec.performance.cudnn_benchmark)  # resolved by the driver
    if ctx.device.type == "cuda" and 0 < gpus < 1:
        torch.cuda.set_per_process_memory_fraction(gpus, 0)
    return ctx


def _model(ctx: RunContext, name: str, infos: Mapping[str, Any], cache: ModelCache):
    mspec = ctx.model(name)
    return load_prepared(ctx, mspec, infos[name], cache)


def _target(ctx: RunContext, name: str, infos: Mapping[str, Any], cache: ModelCache) -> ModelUnderTest:
    key = (str(ctx.run_dir), name, str(infos[name]["key"]))
    if key not in _targets:
        mspec = ctx.model(name)
        surrogate = surrogate_name(ctx.spec, mspec)
        _targets[key] = ModelUnderTest(
            mspec, _model(ctx, name, infos, cache), dict(infos[name]),
            _model(ctx, surrogate, infos, cache) if surrogate else None,
        )  # fmt: skip
    return _targets[key]


def prepare_task(context: list, name: str, infos: Mapping[str, Any], cache_root: str, gpus: float) -> dict[str, Any]:
    """Prepare model ``name`` (train it, or find it in the cache) and return its manifest entry;
    ``infos``: the entries of the models prepared before it (its compression sources)."""
    ctx = _context(context, 1, gpus)
    cache = ModelCache(Path(cache_root))
    mspec = ctx.model(name)
    sources = mspec.compress.upstream if mspec.compress else ()
    models = {u: _model(ctx, u, infos, cache) for u in sources}
    _, info = prepare_model(ctx, mspec, cache, models, {u: str(infos[u]["key"]) for u in sources})
    return info


def cell_task(context: list, infos: Mapping[str, Any], name: str, pc: PlannedCell, inputs: Mapping[str, PlannedCell],
              shard: Shard | None, cache_root: str, cpus: int, gpus: float) -> None:  # fmt: skip
    """Compute one cell (``shard`` None) or one shard of it into the run directory."""
    ctx = _context(context, cpus, gpus)
    target = _target(ctx, name, infos, ModelCache(Path(cache_root)))
    store = CellStore(ctx.run_dir)
    stored_inputs = load_inputs(store, pc, inputs)
    if shard is None:
        compute(ctx, target, pc, stored_inputs, store)
    else:
        run_shard(ctx, target, pc, stored_inputs, shard, store)
