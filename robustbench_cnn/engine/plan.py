"""Plan a run as cells: one model variant x one measurement each (:mod:`.cell_types`), in
dependency order, with their inputs named by role."""

from __future__ import annotations

from robustbench_cnn.attacks.crafting import Crafting
from robustbench_cnn.attacks.sanity import FIXED_BUDGET
from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.engine.cells import (
    AttackParams,
    Cell,
    CertifyParams,
    ChecksParams,
    CleanParams,
    ConvergeParams,
    EnsembleParams,
    ExportParams,
    LatencyParams,
    PreflightParams,
    WorstCaseParams,
)


def crafting(spec: SuiteSpec) -> Crafting:
    """The suite's crafting settings; call on a device-resolved spec (no ``auto`` left)."""
    perf = spec.performance
    if perf.attack_precision == "auto" or perf.compile == "auto":
        raise ValueError("crafting settings are resolved for the device before cells are planned (device_defaults)")
    return Crafting(perf.fold_batchnorm, perf.attack_precision, bool(perf.compile))


def plan(spec: SuiteSpec, mspec: ModelSpec) -> list[Cell]:
    """The cells of one model, in dependency order (a device-resolved spec)."""
    m, craft, perf = mspec.name, crafting(spec), spec.performance
    clean = Cell(m, "clean", CleanParams(craft.precision))
    cells = [clean]
    needs_clean = (("clean", clean.label),)
    if spec.checks.enabled:  # logits, class count, randomness: before any attack
        asked = {ev.attack for ev in spec.evaluations} | (
            set(spec.ensemble.members) if spec.ensemble.enabled else set()
        )
        cells.append(Cell(m, "preflight", PreflightParams(tuple(sorted(asked)), spec.checks.eot_samples)))
    groups: dict[tuple[str, float], list[str]] = {}
    exported = any(ex.models is None or m in ex.models for ex in spec.exports)
    for ev in (ev for ev in spec.evaluations if ev.applies_to(m)):
        for eps in ev.eps:
            params = AttackParams(ev.attack, ev.norm, float(eps), ev.steps, ev.step_size, ev.restarts,
                                  perf.attack_shard_size, craft, keep_adv=exported)  # fmt: skip
            cell = Cell(m, "attack", params, needs_clean)
            cells.append(cell)
            groups.setdefault((ev.norm, float(eps)), []).append(cell.label)
    converge = convergence_cells(spec, cells, clean.label)
    cells += converge
    ens = spec.ensemble
    for (norm, eps), labels in groups.items():
        inputs = [("attack", label) for label in labels]
        inputs += [
            ("converge", c.label) for c in converge if (c.params.attack.norm, c.params.attack.eps) == (norm, eps)
        ]
        with_ensemble = ens.enabled and eps > 0  # the headline worst case: the suite's attacks and the ensemble
        if with_ensemble:
            ensemble = Cell(m, "ensemble", EnsembleParams(norm, eps, ens, perf.attack_shard_size, craft), needs_clean)
            cells.append(ensemble)
            inputs.append(("attack", ensemble.label))
        if len(inputs) > 1:
            worst = WorstCaseParams(norm, eps, ensemble=ens if with_ensemble else None)
            cells.append(Cell(m, "worst_case", worst, tuple(inputs)))
    sigma = getattr(mspec.defense, "sigma", None)
    if sigma is not None:
        cells.append(Cell(m, "certify", CertifyParams(float(sigma), spec.certify, perf.certify_shard_size)))
    if spec.checks.enabled:
        cells.append(Cell(m, "checks", ChecksParams(spec.check_eps, spec.checks, _check_step(spec, m), craft)))
    if spec.latency.enabled:
        cells.append(Cell(m, "latency", LatencyParams(spec.latency)))
    direct = tuple(sorted({float(e) for ev in spec.evaluations if ev.norm == "linf" and ev.applies_to(m)
                           for e in ev.eps if e > 0}))  # fmt: skip
    attacks = tuple(("attack", c.label) for c in cells if c.kind == "attack")
    for ex in spec.exports:
        if ex.models is None or m in ex.models:
            cells.append(Cell(m, "export", ExportParams(ex, spec.latency, direct), needs_clean + attacks))
    return cells


def _check_step(spec: SuiteSpec, model: str) -> float | None:
    """The model's reported linf PGD's own step size at the checks' eps (default: 2.5 * eps / steps),
    if the checks' steps of it can reach the eps boundary (a PGD-40 step of 0.01 at eps 0.3 cannot in
    10 steps: the checks would judge an attack nobody ran)."""
    eps = spec.check_eps
    pgd = [ev for ev in spec.evaluations if ev.attack == "pgd" and ev.norm == "linf" and eps in ev.eps
           and ev.applies_to(model)]  # fmt: skip
    step = pgd[0].step_size if pgd else None
    return step if step is None or step * spec.checks.steps >= eps else None


def convergence_cells(spec: SuiteSpec, cells: list[Cell], clean: str) -> list[Cell]:
    """A ``more_steps`` check of every iterative attack cell (eps > 0) against more steps and restarts."""
    cfg = spec.checks
    if not (cfg.enabled and cfg.every_budget):
        return []
    return [
        Cell(
            c.model,
            "converge",
            ConvergeParams(c.params, cfg.more_steps_factor, cfg.more_restarts, cfg.tolerance, cfg.eval_size),
            (("clean", clean), ("reported", c.label)),
        )  # fmt: skip
        for c in cells
        if c.kind == "attack" and c.params.eps > 0 and c.params.attack not in FIXED_BUDGET
    ]
