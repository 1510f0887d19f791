"""``--executor ray``: the run's training jobs, cells and shards as Ray tasks (Ray core).

The driver plans what the in-process runner plans and submits one task per model to prepare
(compressed models after their sources), then one task per cell, or per shard of a sharded cell,
as soon as its inputs are stored. Tasks read and write the run directory and the model cache, which
must be on a filesystem every worker sees; the object store carries only the read-only run context
(suite, eval data). Merging a sharded cell and the worst case (no model needed) happen in the
driver. The rows are the in-process runner's by construction: the same shards, the same seeds.

Resources per task: ``accelerator`` kinds (training, attacks, certification, checks) one CPU and
``--gpus-per-cell`` of a GPU on a CUDA run (with ``torch.cuda.set_per_process_memory_fraction``);
``cpu`` kinds (exports) one CPU; ``latency`` every CPU of a node, so nothing runs beside it. Each
task sets torch's (and so ONNX Runtime's) thread count to its CPUs. A task whose worker dies is
retried (``max_retries``); a task that raises is not: the cell is recorded as failed and its
dependants are skipped, as in the in-process runner.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from robustbench_cnn.engine.cells import Shard
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.execute import (
    PlannedCell,
    compute,
    load_inputs,
    merge_shards,
    plan_run,
    shards,
    write_index,
)
from robustbench_cnn.engine.kinds import CELL_KINDS
from robustbench_cnn.engine.ray_tasks import cell_task, prepare_task
from robustbench_cnn.engine.run_record import RunRecord
from robustbench_cnn.engine.store import CellStore
from robustbench_cnn.errors import InputError, storage_error
from robustbench_cnn.train.cache import ModelCache

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # system failures (a dead worker or node); a raising cell is never retried


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray: Ray is not installed; pip install 'robustbench-cnn[ray]'") from None
    return ray


def start(ray, address: str | None) -> bool:
    """Connect to ``address`` (``auto``: the cluster this machine belongs to), else start a local
    cluster on 127.0.0.1; returns whether this call started it (and so shuts it down)."""
    if ray.is_initialized():
        return False
    quiet = not logging.getLogger("robustbench_cnn").isEnabledFor(logging.DEBUG)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet,
                              "logging_level": logging.WARNING if quiet else logging.INFO}  # fmt: skip
    if address is None:
        kwargs["_node_ip_address"] = "127.0.0.1"
    ray.init(address=address, **kwargs)
    return True


def run_ray(ctx: RunContext, cache: ModelCache, record: RunRecord, opts: Any) -> None:
    """Run the suite's models and cells on a Ray cluster (see the module docstring)."""
    ray = import_ray()
    started = start(ray, opts.ray_address)
    try:
        context = [ray.put(ctx)]  # in a list: tasks resolve it once per worker, not per task
        gpus = opts.gpus_per_cell if ctx.device.type == "cuda" else 0.0
        with record.stage("train"):
            infos = _prepare(ray, context, ctx, cache, record, gpus)
        planned = plan_run(ctx, infos)
        store = CellStore(ctx.run_dir)
        write_index(store, planned, record.manifest["suite_sha256"])
        with record.stage("cells"):
            _Scheduler(ray, context, ctx, cache, record, planned, gpus).run()
    finally:
        if started:
            ray.shutdown()


def _prepare(ray, context, ctx: RunContext, cache: ModelCache, record: RunRecord, gpus: float) -> dict[str, Any]:
    """One task per model, submitted once its compression sources are prepared."""
    infos: dict[str, Any] = {}
    remaining = list(ctx.spec.models)
    task = ray.remote(prepare_task).options(num_cpus=1, num_gpus=gpus, max_retries=MAX_RETRIES)
    while remaining:
        ready = [m for m in remaining if all(u in infos for u in (m.compress.upstream if m.compress else ()))]
        refs = [task.remote(context, m.name, {u: infos[u] for u in infos}, str(cache.root), gpus) for m in ready]
        for m, info in zip(ready, ray.get(refs), strict=True):
            infos[m.name] = info
            record.model_prepared(m.name, info)
        remaining = [m for m in remaining if m.name not in infos]
    return {name: record.manifest["models"][name] for name in infos}


class _Scheduler:
    """Submit each cell (or its shards) once its inputs are stored; record cells as they finish."""

    def __init__(self, ray, context, ctx: RunContext, cache: ModelCache, record: RunRecord,
                 planned: Mapping[str, list[PlannedCell]], gpus: float) -> None:  # fmt: skip
        self.ray, self.context, self.ctx, self.cache, self.record, self.gpus = ray, context, ctx, cache, record, gpus
        self.store = CellStore(ctx.run_dir)
        self.cells = [pc for cells in planned.values() for pc in cells]
        self.order = {pc.id: i for i, pc in enumerate(self.cells)}
        self.by_id = {pc.id: pc for pc in self.cells}
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.waiting = list(self.cells)
        self.running: dict[Any, tuple[PlannedCell, Any]] = {}  # ref -> (cell, shard or None)
        self.open_shards: dict[str, int] = {}  # cell id -> shards still running
        self.node_cpus = max(1, int(min(n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive"))))

    def run(self) -> None:
        while self.waiting or self.running:
            self._submit_ready()
            if not self.running:
                if self.waiting:  # nothing runs and nothing can start: inputs failed
                    for pc in self.waiting:
                        self._fail(pc, "skipped: a cell it depends on failed")
                    self.waiting = []
                break
            finished, _ = self.ray.wait(list(self.running), num_returns=1)
            self._collect(finished[0])

    def _submit_ready(self) -> None:
        still = []
        for pc in self.waiting:
            inputs = [cid for _, cid in pc.inputs]
            if any(cid in self.failed for cid in inputs):
                self._fail(pc, "skipped: a cell it depends on failed")
            elif all(cid in self.done for cid in inputs):
                self._start(pc)
            else:
                still.append(pc)
        self.waiting = still

    def _start(self, pc: PlannedCell) -> None:
        stored = self.store.load_if_done(pc.id)
        if stored is not None:
            self._finish(pc, reused=True)
            return
        kind = CELL_KINDS.get(pc.cell.kind)
        if not kind.needs_model:  # cheap: from its inputs' arrays, here
            self._run_here(pc)
            return
        plan = shards(self.ctx, pc.cell)
        pending: list[Shard | None] = [None]  # an unsharded cell: one task
        if plan is not None:
            pending = [s for s in plan if self.store.load_shard(pc.id, s) is None]
        if not pending:
            self._merge(pc)
            return
        self.open_shards[pc.id] = len(pending)
        cpus = self.node_cpus if kind.resources == "node" else 1
        gpus = self.gpus if kind.resources in ("accelerator", "node") else 0.0
        options = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": MAX_RETRIES, "retry_exceptions": False}
        task = self.ray.remote(cell_task).options(**options)
        info = self.record.manifest["models"]
        for shard in pending:
            ref = task.remote(
                self.context, info, pc.model, pc, self._inputs(pc), shard, str(self.cache.root), cpus, gpus
            )
            self.running[ref] = (pc, shard)

    def _inputs(self, pc: PlannedCell) -> dict[str, PlannedCell]:
        return {cid: self.by_id[cid] for _, cid in pc.inputs}

    def _collect(self, ref) -> None:
        pc, shard = self.running.pop(ref)
        try:
            self.ray.get(ref)
        except Exception as exc:  # the cell raised (not retried), or its worker died MAX_RETRIES + 1 times
            cause = getattr(exc, "cause", None) or exc
            if storage_error(cause):
                raise cause from None
            if pc.id not in self.failed:
                log.error("%s %s failed: %s: %s", pc.model, pc.cell.label, type(cause).__name__, cause)
                self._fail(pc, f"{type(cause).__name__}: {cause}")
            return
        if pc.id in self.failed:
            return
        self.open_shards[pc.id] -= 1
        if self.open_shards[pc.id] == 0:
            if shard is None:
                self._finish(pc, reused=False)
            else:
                self._merge(pc)

    def _merge(self, pc: PlannedCell) -> None:
        try:
            inputs = load_inputs(self.store, pc, self.by_id)
            mspec = self.ctx.model(pc.model)
            merge_shards(self.ctx, mspec, pc, inputs, self.store, shards(self.ctx, pc.cell) or [])
        except Exception as exc:
            self._fail(pc, f"{type(exc).__name__}: {exc}")
            return
        self._finish(pc, reused=False)

    def _run_here(self, pc: PlannedCell) -> None:
        mspec = self.ctx.model(pc.model)
        target = ModelUnderTest(mspec, None, self.record.manifest["models"][pc.model])  # type: ignore[arg-type]
        try:
            compute(self.ctx, target, pc, load_inputs(self.store, pc, self.by_id), self.store)
        except Exception as exc:
            self._fail(pc, f"{type(exc).__name__}: {exc}")
            return
        self._finish(pc, reused=False)

    def _finish(self, pc: PlannedCell, reused: bool) -> None:
        rows, _, stored = self.store.load(pc.id)
        self.record.cell_done(self.order[pc.id], pc.model, pc.cell.label, rows, stored, reused=reused)
        self.done.add(pc.id)

    def _fail(self, pc: PlannedCell, message: str) -> None:
        self.failed.add(pc.id)
        self.record.cell_failed(pc.model, pc.cell.label, pc.id, message)
