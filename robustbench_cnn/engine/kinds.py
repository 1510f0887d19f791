"""The registry of cell kinds: how each kind of cell is computed, sharded and merged.

Built-in kinds register from :mod:`robustbench_cnn.measures.clean`, ``measure_attack``,
``measure_certify`` and (lazily: ONNX is heavy) :mod:`robustbench_cnn.measures.export`. A kind is a
:class:`CellKind` record: its parameter type, ``run(ctx, target, cell, inputs, shard)`` and, for a
sharded kind, ``images(ctx, cell)`` (how many images its shards cover) and
``merge(ctx, mspec, cell, inputs, parts)`` (exact: from the shards' per-image arrays). ``resources``
says what a distributed worker reserves: ``accelerator`` (a GPU share where there is one), ``cpu``
or ``node`` (nothing beside it: latency).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from robustbench_cnn.config.spec import ModelSpec
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


CELL_KINDS: Registry[CellKind] = Registry(
    "cell kind",
    ("robustbench_cnn.measures.clean", "robustbench_cnn.measures.attack", "robustbench_cnn.measures.certify"),
)
CELL_KINDS.register_lazy("export", "robustbench_cnn.measures.export:EXPORT")


def cell_kind(name: str, params: type, **options: Any) -> Callable[[Run], Run]:
    """Register ``run`` as the executor of cell kind ``name`` (see :class:`CellKind` for ``options``)."""

    def decorator(run: Run) -> Run:
        CELL_KINDS.register(name)(CellKind(name, params, run, **options))
        return run

    return decorator
