"""The registries of measurements: how each kind of cell is computed, sharded and merged
(:data:`CELL_KINDS`), and which cells each kind of measurement plans for a model (:data:`MEASURES`).

A measurement is one module of :mod:`robustbench_cnn.measures`: it registers its cell kinds with
:func:`cell_kind` and its planning with :func:`register_measure`; the planner
(:func:`robustbench_cnn.engine.plan.plan`) loops over :data:`MEASURES` in ``order``. A kind is a
:class:`CellKind` record: its parameter type, ``run(ctx, target, cell, inputs, shard)`` and, for a
sharded kind, ``images(ctx, cell)`` (how many images its shards cover) and
``merge(ctx, mspec, cell, inputs, parts)`` (exact: from the shards' per-image arrays). ``resources``
says what a distributed worker reserves: ``accelerator`` (a GPU share where there is one), ``cpu``
or ``node`` (nothing beside it: latency).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.engine.cells import Cell, CellResult, Inputs, Shard, shard_plan
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.registry import Registry

Run = Callable[[RunContext, ModelUnderTest, Cell, Inputs, "Shard | None"], CellResult]
Merge = Callable[[RunContext, ModelSpec, Cell, Inputs, list[CellResult]], CellResult]


@dataclass(frozen=True)
class CellKind:
    name: str
    params: type
    run: Run
    merge: Merge | None = None  # set for sharded kinds
    images: Callable[[RunContext, Cell], int] | None = None  # set for sharded kinds
    shard_size: Callable[[Cell], int] | None = None
    resources: Literal["accelerator", "cpu", "node"] = "accelerator"
    needs_model: bool = True  # False: computed from its inputs' arrays alone (worst case)

    def shards(self, ctx: RunContext, cell: Cell) -> list[Shard] | None:
        """The cell's shards (a function of the cell only), or ``None`` if the kind is not sharded."""
        if self.images is None or self.shard_size is None:
            return None
        return shard_plan(self.images(ctx, cell), self.shard_size(cell))


BUILTIN_MEASURES = tuple(
    f"robustbench_cnn.measures.{name}"
    for name in ("clean", "checks", "attack", "certify", "latency", "export", "corruption")
)
CELL_KINDS: Registry[CellKind] = Registry("cell kind", BUILTIN_MEASURES)

Planner = Callable[[SuiteSpec, ModelSpec, Sequence[Cell]], list[Cell]]
Estimator = Callable[[SuiteSpec, ModelSpec, int], dict[str, int]]


@dataclass(frozen=True)
class Measure:
    """A kind of measurement as the planner sees it.

    ``plan(spec, mspec, planned)``: the cells it adds for model ``mspec`` of a device-resolved suite,
    given the cells planned before it (its inputs are among them, named by role); ``order``: measures
    plan in ascending order, so a measure that takes another's cells as inputs has a higher one;
    ``estimate(spec, mspec, n_eval)``: its work in image-passes by stage (``robustbench-cnn plan``);
    ``settings``: the frozen pydantic class of its own suite table (``[name]``), for a measure the suite
    schema does not know (``spec.section(name)`` is then its validated settings, or ``None``)."""

    name: str
    order: int
    plan: Planner
    estimate: Estimator | None = None
    settings: type | None = None


MEASURES: Registry[Measure] = Registry("measure", BUILTIN_MEASURES)


def register_measure(
    name: str, order: int, estimate: Estimator | None = None, settings: type | None = None
) -> Callable[[Planner], Planner]:
    """Register ``plan`` as measure ``name``'s planner (see :class:`Measure`)."""

    def decorator(plan: Planner) -> Planner:
        MEASURES.register(name)(Measure(name, order, plan, estimate, settings))
        return plan

    return decorator


def measures() -> list[Measure]:
    """Every registered measure, in planning order."""
    return sorted((MEASURES.get(name) for name in MEASURES.names()), key=lambda m: (m.order, m.name))


def cell_kind(name: str, params: type, **options: Any) -> Callable[[Run], Run]:
    """Register ``run`` as the executor of cell kind ``name`` (see :class:`CellKind` for ``options``)."""

    def decorator(run: Run) -> Run:
        CELL_KINDS.register(name)(CellKind(name, params, run, **options))
        return run

    return decorator
