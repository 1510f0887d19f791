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
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
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
from robustbench_cnn.engine.scheduler import Finished, Scheduler
from robustbench_cnn.engine.store import CellStore
from robustbench_cnn.errors import InputError
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
            Scheduler(ctx, planned, record, RayBackend(ray, context, ctx, cache, record, planned, gpus)).run()
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


class RayBackend:
    """The scheduler's Ray backend: a cell needing its model runs as one task, or one task per shard
    still missing (merged here when every shard is stored); a cell needing none (the worst case) runs
    here. A shard that raises fails its cell at once; the cell's other shards are collected and ignored."""

    def __init__(self, ray, context, ctx: RunContext, cache: ModelCache, record: RunRecord,
                 planned: Mapping[str, list[PlannedCell]], gpus: float) -> None:  # fmt: skip
        self.ray, self.context, self.ctx, self.cache, self.record, self.gpus = ray, context, ctx, cache, record, gpus
        self.store = CellStore(ctx.run_dir)
        self.by_id = {pc.id: pc for cells in planned.values() for pc in cells}
        self.running: dict[Any, tuple[PlannedCell, Shard | None]] = {}  # ref -> (cell, shard or None)
        self.open_shards: dict[str, int] = {}  # cell id -> shards still running
        self.finished: deque[Finished] = deque()  # cells finished here, not yet returned
        self.given_up: set[str] = set()  # cells returned as failed while some of their shards still ran
        self.node_cpus = max(1, int(min(n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive"))))

    def refuse(self, pc: PlannedCell) -> tuple[str, str | None] | None:
        return None  # a dead worker is retried by Ray (max_retries), not supervised here

    def busy(self) -> bool:
        return bool(self.finished or self.running)

    def submit(self, pc: PlannedCell) -> None:
        kind = CELL_KINDS.get(pc.cell.kind)
        if not kind.needs_model:  # cheap: from its inputs' arrays, here
            self.finished.append((pc, self._here(partial(self._compute_here, pc))))
            return
        plan = shards(self.ctx, pc.cell)
        pending: list[Shard | None] = [None]  # an unsharded cell: one task
        if plan is not None:
            pending = [s for s in plan if self.store.load_shard(pc.id, s) is None]
        if not pending:
            self.finished.append((pc, self._here(partial(self._merge, pc))))
            return
        self.open_shards[pc.id] = len(pending)
        cpus = self.node_cpus if kind.resources == "node" else 1
        gpus = self.gpus if kind.resources in ("accelerator", "node") else 0.0
        options = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": MAX_RETRIES, "retry_exceptions": False}
        task = self.ray.remote(cell_task).options(**options)
        inputs = {cid: self.by_id[cid] for _, cid in pc.inputs}
        info = self.record.manifest["models"]
        for shard in pending:
            ref = task.remote(self.context, info, pc.model, pc, inputs, shard, str(self.cache.root), cpus, gpus)
            self.running[ref] = (pc, shard)

    def next_finished(self) -> Finished | None:
        if self.finished:
            return self.finished.popleft()
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        pc, shard = self.running.pop(ready[0])
        try:
            self.ray.get(ready[0])
        except Exception as exc:  # the cell raised (not retried), or its worker died MAX_RETRIES + 1 times
            if pc.id in self.given_up:
                return None
            self.given_up.add(pc.id)
            return pc, getattr(exc, "cause", None) or exc
        if pc.id in self.given_up:
            return None
        self.open_shards[pc.id] -= 1
        if self.open_shards[pc.id]:
            return None
        return pc, (None if shard is None else self._here(partial(self._merge, pc)))

    @staticmethod
    def _here(work: Callable[[], None]) -> Exception | None:
        """What ``work`` (run here, in the driver) raised; None if it finished."""
        try:
            work()
        except Exception as exc:
            return exc
        return None

    def _merge(self, pc: PlannedCell) -> None:
        inputs = load_inputs(self.store, pc, self.by_id)
        merge_shards(self.ctx, self.ctx.model(pc.model), pc, inputs, self.store, shards(self.ctx, pc.cell) or [])

    def _compute_here(self, pc: PlannedCell) -> None:
        target = ModelUnderTest(self.ctx.model(pc.model), None, self.record.manifest["models"][pc.model])  # type: ignore[arg-type]
        compute(self.ctx, target, pc, load_inputs(self.store, pc, self.by_id), self.store)
