"""The checks of an evaluation: pre-flight checks of the model (logits, class count, randomness, EOT;
before any attack), the convergence of every attack at its budget (``check_more_steps``), and the
gradient-masking sanity checks (Carlini et al. 2019) as ``check_<name>`` rows (1 passed, 0 failed)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.builtin import default_step_size
from robustbench_cnn.attacks.preflight import eot_check, preflight
from robustbench_cnn.attacks.sanity import FIXED_BUDGET, convergence, run_checks
from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.engine.cells import (
    Cell,
    CellResult,
    ChecksParams,
    ConvergeParams,
    Inputs,
    PreflightParams,
    Shard,
)
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.kinds import cell_kind, register_measure
from robustbench_cnn.engine.plan import crafting
from robustbench_cnn.measures.common import checks_meta, crafting_for

log = logging.getLogger(__name__)


def _estimate(spec: SuiteSpec, mspec: ModelSpec, n_eval: int) -> dict[str, int]:
    k = spec.checks
    return {"checks": min(k.eval_size, n_eval) * k.steps * (3 + k.more_steps_factor * k.more_restarts) if k.enabled
            else 0}  # fmt: skip


@register_measure("preflight", order=5)
def plan_preflight(spec: SuiteSpec, mspec: ModelSpec, planned: Sequence[Cell]) -> list[Cell]:
    """Logits, class count, randomness: before any attack."""
    if not spec.checks.enabled:
        return []
    asked = {ev.attack for ev in spec.evaluations} | (set(spec.ensemble.members) if spec.ensemble.enabled else set())
    return [Cell(mspec.name, "preflight", PreflightParams(tuple(sorted(asked)), spec.checks.eot_samples))]


@register_measure("converge", order=20)
def plan_converge(spec: SuiteSpec, mspec: ModelSpec, planned: Sequence[Cell]) -> list[Cell]:
    """A ``more_steps`` check of every iterative attack cell (eps > 0) against more steps and restarts."""
    cfg = spec.checks
    if not (cfg.enabled and cfg.every_budget):
        return []
    clean = next(c.label for c in planned if c.kind == "clean")
    return [
        Cell(
            c.model,
            "converge",
            ConvergeParams(c.params, cfg.more_steps_factor, cfg.more_restarts, cfg.tolerance, cfg.eval_size),
            (("clean", clean), ("reported", c.label)),
        )  # fmt: skip
        for c in planned
        if c.kind == "attack" and c.params.eps > 0 and c.params.attack not in FIXED_BUDGET
    ]


@register_measure("checks", order=50, estimate=_estimate)
def plan_checks(spec: SuiteSpec, mspec: ModelSpec, planned: Sequence[Cell]) -> list[Cell]:
    """The sanity checks at the checks' eps."""
    if not spec.checks.enabled:
        return []
    params = ChecksParams(spec.check_eps, spec.checks, _check_step(spec, mspec.name), crafting(spec))
    return [Cell(mspec.name, "checks", params)]


def _check_step(spec: SuiteSpec, model: str) -> float | None:
    """The model's reported linf PGD's own step size at the checks' eps (default: 2.5 * eps / steps),
    if the checks' steps of it can reach the eps boundary (a PGD-40 step of 0.01 at eps 0.3 cannot in
    10 steps: the checks would judge an attack nobody ran)."""
    eps = spec.check_eps
    pgd = [ev for ev in spec.evaluations if ev.attack == "pgd" and ev.norm == "linf" and eps in ev.eps
           and ev.applies_to(model)]  # fmt: skip
    step = pgd[0].step_size if pgd else None
    return step if step is None or step * spec.checks.steps >= eps else None


@cell_kind("preflight", PreflightParams)
def preflight_cell(
    ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None
) -> CellResult:
    """``check_logits``, ``check_num_classes``, ``randomized`` (1: two identical passes differ, so
    attacks use EOT) and ``check_eot`` (0: randomized, but attacked through fewer than 2 passes) on
    the first 64 eval images."""
    probe = ctx.data.x_eval[:64].to(ctx.device)
    results, randomized = preflight(target.model, probe, cell.params.attacks)
    results.append(eot_check(randomized, cell.params.eot_samples))
    meta = {**checks_meta(target, {r.name: r for r in results}), "randomized": randomized}
    row = ctx.row(target.spec)
    rows = [row(metric=f"check_{r.name}", value=float(r.passed), n=len(probe)) for r in results]
    return CellResult([*rows, row(metric="randomized", value=float(randomized), n=len(probe))], {}, meta)


@cell_kind("converge", ConvergeParams)
def converge_cell(
    ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None
) -> CellResult:
    """``check_more_steps`` at one attack's budget: the reported attack (its own step size) against
    ``more_steps_factor`` x its steps with ``more_restarts`` restarts, on the first ``eval_size`` images."""
    p: ConvergeParams = cell.params
    a, k, data = p.attack, p.eval_size, ctx.data
    step = default_step_size(a.eps, a.steps, a.step_size)  # fixed: more steps, same step

    def make(steps: int):
        return partial(ATTACKS.get(a.attack), eps=a.eps, norm=a.norm, steps=steps, step_size=step,
                       num_classes=data.num_classes)  # fmt: skip

    result = convergence(
        target.model, make, data.x_eval[:k], data.y_eval[:k], inputs.one("clean").arrays["mask"][:k], a.eps, a.norm,
        a.steps, reported=inputs.one("reported").arrays["mask"][:k], restarts=a.restarts,
        more_steps_factor=p.more_steps_factor, more_restarts=p.more_restarts, tolerance=p.tolerance,
        label=a.attack, batch_size=ctx.spec.eval_batch_size, seed=ctx.seed, device=ctx.device,
        progress=False, crafting=crafting(ctx.spec), attacker=crafting_for(ctx, target),
    )  # fmt: skip
    at_budget = [
        ev for ev in ctx.spec.evaluations if ev.norm == a.norm and a.eps in ev.eps and ev.applies_to(target.name)
    ]
    headline = ctx.spec.ensemble.enabled or len(at_budget) > 1  # a worst case at this budget judges itself
    meta = checks_meta(target, {f"more_steps({a.attack},{a.norm},{a.eps:g})": result}, decides=not headline)
    row = ctx.row(target.spec)
    n = len(data.y_eval[:k])
    arrays = {"stronger": result.survivors} if result.survivors is not None else {}
    return CellResult([row(metric="check_more_steps", value=float(result.passed), attack=a.attack, norm=a.norm,
                           eps=a.eps, n=n)], arrays, meta)  # fmt: skip


@cell_kind("checks", ChecksParams)
def checks_cell(ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None) -> CellResult:
    """Gradient-masking sanity checks as ``check_<name>`` rows (1 passed, 0 failed)."""
    p: ChecksParams = cell.params
    cfg, eps, data = p.settings, p.eps, ctx.data
    results = run_checks(
        target.model, data.x_eval[: cfg.eval_size], data.y_eval[: cfg.eval_size], eps, target.surrogate,
        steps=cfg.steps, more_steps_factor=cfg.more_steps_factor, more_restarts=cfg.more_restarts,
        large_eps=cfg.large_eps, large_eps_max_acc=cfg.large_eps_max_acc, tolerance=cfg.tolerance, seed=ctx.seed,
        device=ctx.device, crafting=crafting(ctx.spec), attacker=crafting_for(ctx, target), step_size=p.step_size,
    )  # fmt: skip
    row = ctx.row(target.spec)
    n = min(cfg.eval_size, len(data.y_eval))
    rows = [row(metric=f"check_{r.name}", value=float(r.passed), norm="linf", eps=eps, n=n) for r in results]
    return CellResult(rows, {}, checks_meta(target, {r.name: r for r in results}))
