"""The one scheduler over a run's cell graph, and its in-process backend.

:class:`Scheduler` owns what every way of running a suite must do the same: start a cell once its
inputs are stored, reuse a cell already stored (``--resume``), skip a cell whose input failed (and so
its dependants), record each cell as it finishes with its place in the plan (so the results table is
in plan order whichever backend ran it), and stop the run on a storage error (a full or read-only
disk would fail every later cell the same way). A :class:`Backend` only computes: the in-process
:class:`LocalBackend` (here) one cell at a time in plan order, the Ray backend
(:mod:`robustbench_cnn.engine.ray_executor`) as tasks, one per cell or shard, on a cluster.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping
from typing import Protocol

from robustbench_cnn.engine import crashes
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.execute import PlannedCell, compute, load_inputs
from robustbench_cnn.engine.run_record import RunRecord
from robustbench_cnn.engine.store import CellStore
from robustbench_cnn.errors import storage_error

log = logging.getLogger(__name__)

SKIPPED = "skipped: a cell it depends on failed"

Finished = tuple[PlannedCell, BaseException | None]  # a cell and what it raised (None: stored)


class Backend(Protocol):
    """Computes cells whose inputs are stored; the scheduler decides which and records the outcome."""

    def refuse(self, pc: PlannedCell) -> tuple[str, str | None] | None:
        """Why ``pc`` must not be computed (a message and a crash record), or None."""
        ...

    def submit(self, pc: PlannedCell) -> None:
        """Start computing ``pc`` into the run's cell store."""
        ...

    def busy(self) -> bool:
        """Whether a submitted cell has not been returned by :meth:`next_finished` yet."""
        ...

    def next_finished(self) -> Finished | None:
        """Wait for a submitted cell to finish; None when what finished needs no recording."""
        ...


class Scheduler:
    """Run ``planned`` (each model's cells, in plan order) on ``backend``, recording into ``record``."""

    def __init__(self, ctx: RunContext, planned: Mapping[str, list[PlannedCell]], record: RunRecord,
                 backend: Backend) -> None:  # fmt: skip
        self.record, self.backend = record, backend
        self.store = CellStore(ctx.run_dir)
        self.waiting = [pc for cells in planned.values() for pc in cells]
        self.order = {pc.id: i for i, pc in enumerate(self.waiting)}
        self.done: set[str] = set()
        self.failed: set[str] = set()

    def run(self) -> None:
        while self.waiting or self.backend.busy():
            self._submit_ready()
            if not self.backend.busy():
                for pc in self.waiting:  # nothing runs and nothing can start: inputs failed
                    self._fail(pc, SKIPPED)
                self.waiting = []
                break
            finished = self.backend.next_finished()
            if finished is not None:
                self._finished(*finished)

    def _submit_ready(self) -> None:
        still = []
        for pc in self.waiting:
            inputs = [cid for _, cid in pc.inputs]
            if any(cid in self.failed for cid in inputs):
                self._fail(pc, SKIPPED)
            elif not all(cid in self.done for cid in inputs):
                still.append(pc)
            elif (refused := self.backend.refuse(pc)) is not None:
                self._fail(pc, *refused)
            elif (stored := self.store.load_if_done(pc.id)) is not None:  # --resume: computed before
                self._record(pc, stored, reused=True)
            else:
                self.backend.submit(pc)
        self.waiting = still

    def _finished(self, pc: PlannedCell, error: BaseException | None) -> None:
        if pc.id in self.failed:
            return
        try:
            if error is not None:
                raise error
            stored = self.store.load(pc.id)
        except Exception as exc:  # recorded; the rest of the run goes on
            if storage_error(exc):
                raise
            log.error("%s %s failed: %s: %s", pc.model, pc.cell.label, type(exc).__name__, exc)
            self._fail(pc, f"{type(exc).__name__}: {exc}")
            return
        self._record(pc, stored, reused=False)

    def _record(self, pc: PlannedCell, stored: tuple, reused: bool) -> None:
        rows, _, facts = stored
        self.record.cell_done(self.order[pc.id], pc.model, pc.cell.label, rows, facts, reused=reused)
        self.done.add(pc.id)

    def _fail(self, pc: PlannedCell, message: str, crash: str | None = None) -> None:
        self.failed.add(pc.id)
        self.record.cell_failed(pc.model, pc.cell.label, pc.id, message, crash)


class LocalBackend:
    """Compute cells in this process, one at a time, in plan order; a native crash is supervised
    (:mod:`robustbench_cnn.engine.crashes`): a cell that killed the run ``MAX_CRASHES`` times is refused."""

    def __init__(self, ctx: RunContext, targets: Mapping[str, ModelUnderTest], planned: Mapping[str, list[PlannedCell]],
                 record: RunRecord) -> None:  # fmt: skip
        self.ctx, self.targets, self.record = ctx, targets, record
        self.store = CellStore(ctx.run_dir)
        cells = [pc for cells in planned.values() for pc in cells]
        self.by_id = {pc.id: pc for pc in cells}
        self.order = {pc.id: i for i, pc in enumerate(cells)}
        self.queue: list[tuple[int, str]] = []

    def refuse(self, pc: PlannedCell) -> tuple[str, str | None] | None:
        crashed = crashes.signals(self.ctx.run_dir, pc.id)
        if len(crashed) < crashes.MAX_CRASHES:
            return None
        return crashes.killed_message(crashed), crashed[-1]

    def submit(self, pc: PlannedCell) -> None:
        bisect.insort(self.queue, (self.order[pc.id], pc.id))

    def busy(self) -> bool:
        return bool(self.queue)

    def next_finished(self) -> Finished:
        pc = self.by_id[self.queue.pop(0)[1]]
        try:
            with crashes.in_flight(self.ctx.run_dir, pc.id, pc.model, pc.cell.label), self.record.stage(pc.cell.kind):
                compute(self.ctx, self.targets[pc.model], pc, load_inputs(self.store, pc, self.by_id), self.store)
        except Exception as exc:
            return pc, exc
        return pc, None
