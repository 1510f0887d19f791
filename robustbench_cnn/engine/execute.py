"""Compute planned cells against a run's cell store: the part both drivers (in-process and Ray) share.

A sharded cell is computed shard by shard (each stored as it finishes, skipped when already stored)
and then merged from the stored shards, so a cell's result is the same whichever driver, worker
count or resume order produced it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.engine.cells import Cell, Inputs, Shard, StoredCell
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.kinds import CELL_KINDS
from robustbench_cnn.engine.plan import plan
from robustbench_cnn.engine.store import CellStore, StoreError, index_entry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedCell:
    """A cell with its id and its inputs' ids, by role."""

    cell: Cell
    id: str
    inputs: tuple[tuple[str, str], ...] = ()

    @property
    def model(self) -> str:
        return self.cell.model


def surrogate_name(spec: SuiteSpec, mspec: ModelSpec) -> str | None:
    """The transfer check's surrogate: the suite's choice, else the first other undefended model."""
    name = spec.checks.surrogate
    if name is None:
        name = next((o.name for o in spec.models if o.name != mspec.name and o.defense is None), None)
    return None if name == mspec.name else name


def plan_run(ctx: RunContext, infos: Mapping[str, Mapping[str, Any]]) -> dict[str, list[PlannedCell]]:
    """Every model's cells with ids (``infos``: the prepared models' manifest entries, with ``key``)."""
    planned: dict[str, list[PlannedCell]] = {}
    for mspec in ctx.spec.models:
        surrogate = surrogate_name(ctx.spec, mspec)
        surrogate_key = str(infos[surrogate]["key"]) if surrogate is not None else ""
        ids: dict[str, str] = {}
        cells = []
        for cell in plan(ctx.spec, mspec):
            cid = cell.cell_id(str(infos[mspec.name]["key"]), ctx.data.fingerprint, ctx.seed, surrogate_key)
            ids[cell.label] = cid
            cells.append(PlannedCell(cell, cid, tuple((role, ids[label]) for role, label in cell.deps)))
        planned[mspec.name] = cells
    return planned


def write_index(store: CellStore, planned: Mapping[str, list[PlannedCell]], suite_sha256: str) -> None:
    """Write the run's cell index; on ``--resume``, first compare the plan with the index the run
    wrote before (a log line says how much is done and what changed)."""
    _compare_with_index(store, planned)
    entries = []
    for cells in planned.values():
        ids = {pc.cell.label: pc.id for pc in cells}
        entries += [index_entry(pc.cell, pc.id, ids) for pc in cells]
    store.write_index(entries, suite_sha256)


def _compare_with_index(store: CellStore, planned: Mapping[str, list[PlannedCell]]) -> None:
    if not (store.dir / "index.json").is_file():
        return
    try:
        before = {str(e.get("id")) for e in store.read_index()["cells"] if isinstance(e, dict)}
    except StoreError as exc:
        log.warning("%s; planning the run afresh", exc)
        return
    ids = [pc.id for cells in planned.values() for pc in cells]
    done = sum(store.done(cid) for cid in ids)
    new = [cid for cid in ids if cid not in before]
    log.info("resume: %d of %d cells done; %d cell(s) not in the run's index (suite or code changed)",
             done, len(ids), len(new))  # fmt: skip


def load_inputs(store: CellStore, pc: PlannedCell, by_id: Mapping[str, PlannedCell]) -> Inputs:
    """The stored arrays of a cell's inputs (each input is finished before its dependants run)."""
    found = []
    for role, cid in pc.inputs:
        _, arrays, _ = store.load(cid)
        found.append((role, StoredCell(by_id[cid].cell, arrays)))
    return Inputs(tuple(found))


def shards(ctx: RunContext, cell: Cell) -> list[Shard] | None:
    return CELL_KINDS.get(cell.kind).shards(ctx, cell)


def run_shard(ctx: RunContext, target: ModelUnderTest, pc: PlannedCell, inputs: Inputs, shard: Shard,
              store: CellStore) -> None:  # fmt: skip
    """Compute one shard and store it (each attempt is logged in the cell's ``attempts.log``)."""
    store.record_attempt(pc.id, shard)
    start = time.perf_counter()
    result = CELL_KINDS.get(pc.cell.kind).run(ctx, target, pc.cell, inputs, shard)
    store.save_shard(pc.id, shard, result, round(time.perf_counter() - start, 3))


def merge_shards(ctx: RunContext, mspec: ModelSpec, pc: PlannedCell, inputs: Inputs, store: CellStore,
                 pending: Iterable[Shard]) -> None:  # fmt: skip
    """Merge a sharded cell's stored shards into the cell (every shard must be stored)."""
    parts = []
    for shard in pending:
        part = store.load_shard(pc.id, shard)
        if part is None:
            raise RuntimeError(f"{pc.cell.label}: shard {shard.index} is not stored")
        parts.append(part)
    result = CELL_KINDS.get(pc.cell.kind).merge(ctx, mspec, pc.cell, inputs, parts)  # type: ignore[misc]
    seconds = sum(float(part.meta.get("seconds") or 0.0) for part in parts)
    store.save(pc.id, pc.cell, result, round(seconds, 3))


def compute(ctx: RunContext, target: ModelUnderTest, pc: PlannedCell, inputs: Inputs, store: CellStore) -> None:
    """Compute a cell (its missing shards in order, then the merge) and store it."""
    plan_ = shards(ctx, pc.cell)
    if plan_ is None:
        start = time.perf_counter()
        result = CELL_KINDS.get(pc.cell.kind).run(ctx, target, pc.cell, inputs, None)
        store.save(pc.id, pc.cell, result, round(time.perf_counter() - start, 3))
        return
    for shard in plan_:
        if store.load_shard(pc.id, shard) is None:
            run_shard(ctx, target, pc, inputs, shard, store)
    merge_shards(ctx, target.spec, pc, inputs, store, plan_)
