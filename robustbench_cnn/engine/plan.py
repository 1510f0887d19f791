"""Plan a run as cells: one model variant x one measurement each (:mod:`.cells`), in dependency order,
with their inputs named by role. Each registered measure (:data:`robustbench_cnn.engine.kinds.MEASURES`)
plans its own cells; this module only runs them in order."""

from __future__ import annotations

from robustbench_cnn.attacks.crafting import Crafting
from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.engine.cells import Cell
from robustbench_cnn.engine.kinds import measures


def crafting(spec: SuiteSpec) -> Crafting:
    """The suite's crafting settings; call on a device-resolved spec (no ``auto`` left)."""
    perf = spec.performance
    if perf.attack_precision == "auto" or perf.compile == "auto":
        raise ValueError("crafting settings are resolved for the device before cells are planned (device_defaults)")
    return Crafting(perf.fold_batchnorm, perf.attack_precision, bool(perf.compile))


def plan(spec: SuiteSpec, mspec: ModelSpec) -> list[Cell]:
    """The cells of one model, in dependency order (a device-resolved spec)."""
    cells: list[Cell] = []
    for measure in measures():
        cells += measure.plan(spec, mspec, cells)
    return cells
