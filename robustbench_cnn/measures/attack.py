"""Attack cells: one attack at one budget, the strong ensemble, and the per-example worst case.

Attack and ensemble cells are sharded by image range (:func:`~robustbench_cnn.engine.cells.shard_plan`):
each shard attacks its clean-correct images in batches that never cross the shard, reseeding per
batch from (seed, cell, first image index), so a shard's result does not depend on which worker
ran it or what ran before. The merge concatenates the shards' per-image masks (and adversarial
images) and computes the rows from them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import torch

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.config.spec import EnsembleSpec, ModelSpec, SuiteSpec
from robustbench_cnn.data.base import subset_indices
from robustbench_cnn.engine.cells import (
    AttackParams,
    Cell,
    CellResult,
    EnsembleParams,
    Inputs,
    Shard,
    WorstCaseParams,
)
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.kinds import cell_kind, register_measure
from robustbench_cnn.engine.plan import crafting
from robustbench_cnn.measures.common import attack_batch, crafting_for
from robustbench_cnn.metrics import clopper_pearson
from robustbench_cnn.seeds import derived_seed
from robustbench_cnn.zoo import ZOO

log = logging.getLogger(__name__)


def _estimate(spec: SuiteSpec, mspec: ModelSpec, n_eval: int) -> dict[str, int]:
    """Image-passes of the attacks and the ensemble (an upper bound where attacks stop early)."""
    evals = [ev for ev in spec.evaluations if ev.applies_to(mspec.name)]
    attacks = sum(n_eval * ev.steps * ev.restarts for ev in evals for _ in ev.eps)
    e = spec.ensemble  # at every (norm, eps > 0) evaluated; apgd_t once per target class
    budgets = {(ev.norm, eps) for ev in evals for eps in ev.eps if eps > 0}
    runs = sum(e.targets if member == "apgd_t" else 1 for member in e.members) * e.steps * e.restarts
    return {"attacks": attacks + (len(budgets) * min(n_eval, e.eval_size or n_eval) * runs if e.enabled else 0)}


@register_measure("attack", order=10, estimate=_estimate)
def plan_attacks(spec: SuiteSpec, mspec: ModelSpec, planned: Sequence[Cell]) -> list[Cell]:
    """One cell per evaluated attack and budget; it keeps its adversarial images where the model is exported."""
    m, craft, perf = mspec.name, crafting(spec), spec.performance
    clean = next(c.label for c in planned if c.kind == "clean")
    exported = any(ex.models is None or m in ex.models for ex in spec.exports)
    return [
        Cell(m, "attack", AttackParams(ev.attack, ev.norm, float(eps), ev.steps, ev.step_size, ev.restarts,
                                       perf.attack_shard_size, craft, keep_adv=exported), (("clean", clean),))
        for ev in spec.evaluations if ev.applies_to(m) for eps in ev.eps
    ]  # fmt: skip


@register_measure("worst_case", order=30)
def plan_worst_cases(spec: SuiteSpec, mspec: ModelSpec, planned: Sequence[Cell]) -> list[Cell]:
    """At each evaluated budget: the ensemble (eps > 0, if enabled) and the per-example worst case over
    every attack there, their stronger reruns and the ensemble."""
    m, craft, ens = mspec.name, crafting(spec), spec.ensemble
    clean = next(c.label for c in planned if c.kind == "clean")
    groups: dict[tuple[str, float], list[tuple[str, str]]] = {}
    for c in planned:
        if c.kind == "attack":
            groups.setdefault((c.params.norm, c.params.eps), []).append(("attack", c.label))
    cells = []
    for (norm, eps), inputs in groups.items():
        inputs += [("converge", c.label) for c in planned
                   if c.kind == "converge" and (c.params.attack.norm, c.params.attack.eps) == (norm, eps)]  # fmt: skip
        with_ensemble = ens.enabled and eps > 0  # the headline worst case: the suite's attacks and the ensemble
        if with_ensemble:
            params = EnsembleParams(norm, eps, ens, spec.performance.attack_shard_size, craft)
            ensemble = Cell(m, "ensemble", params, (("clean", clean),))
            cells.append(ensemble)
            inputs.append(("attack", ensemble.label))
        if len(inputs) > 1:
            worst = WorstCaseParams(norm, eps, ensemble=ens if with_ensemble else None)
            cells.append(Cell(m, "worst_case", worst, tuple(inputs)))
    return cells


def _eval_images(ctx: RunContext, cell: Cell) -> int:
    return len(ctx.data.y_eval)


def ensemble_subset(ctx: RunContext, settings: EnsembleSpec | None) -> torch.Tensor | None:
    """The eval images (indices) the ensemble and the worst case run on: ``[ensemble] eval_size`` of
    them, a subset fixed by the dataset's split seed; None: all of them."""
    size = settings.eval_size if settings is not None else None
    return subset_indices(len(ctx.data.y_eval), size, ctx.spec.dataset.split_seed + 2)


def _ensemble_images(ctx: RunContext, cell: Cell) -> int:
    subset = ensemble_subset(ctx, cell.params.settings)
    return len(ctx.data.y_eval) if subset is None else len(subset)


def _concat(parts: list[CellResult], name: str) -> torch.Tensor:
    return torch.cat([part.arrays[name] for part in parts])


def _merge_robust(ctx: RunContext, mspec: ModelSpec, cell: Cell, inputs: Inputs, parts: list[CellResult]) -> CellResult:
    """``robust_acc`` from the shards' masks (and their adversarial images, if kept)."""
    p = cell.params
    mask = _concat(parts, "mask")
    value = float(mask.float().mean())
    log.info("%s: %s robust accuracy %.4f", mspec.name, cell.label, value)
    arrays = {"mask": mask}
    if parts and all("adv" in part.arrays for part in parts):
        arrays["adv"] = _concat(parts, "adv")
    row = ctx.row(mspec)(metric="robust_acc", value=value, attack=p.attack, norm=p.norm, eps=p.eps, n=len(mask))
    return CellResult([row], arrays)


def _shard_size(cell: Cell) -> int:
    return cell.params.shard_size


def _attack_shard(ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard, make,
                  batch_size: int, restarts: int, keep_adv: bool,
                  subset: torch.Tensor | None = None) -> CellResult:  # fmt: skip
    """Survivors of images ``[shard.start, shard.stop)`` of the eval split, or of ``subset`` (indices
    into it), and their adversarial images if kept."""
    p, data = cell.params, ctx.data
    rows = slice(shard.start, shard.stop) if subset is None else subset[shard.start : shard.stop]
    x, y = data.x_eval[rows], data.y_eval[rows]
    clean = inputs.one("clean").arrays["mask"][rows]
    adv = x.clone() if keep_adv else None
    correct = robust_correct(
        target.model, make, x, y, clean, p.eps, p.norm, batch_size=batch_size, restarts=restarts,
        seed=derived_seed(ctx.seed, cell.label), device=ctx.device, desc=f"{target.name} {cell.label}",
        progress=ctx.progress, adv_out=adv, crafting=crafting(ctx.spec), attacker=crafting_for(ctx, target),
        index_offset=shard.start,
    )  # fmt: skip
    return CellResult([], {"mask": correct} if adv is None else {"mask": correct, "adv": adv})


@cell_kind("attack", AttackParams, merge=_merge_robust, images=_eval_images, shard_size=_shard_size)
def attack_cell(ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None) -> CellResult:
    """One shard of ``robust_acc`` of one attack at one eps; mask: images that survived it."""
    p: AttackParams = cell.params
    assert shard is not None, "attack cells run by shard"
    make = partial(ATTACKS.get(p.attack), eps=p.eps, norm=p.norm, steps=p.steps, step_size=p.step_size,
                   num_classes=ctx.data.num_classes)  # fmt: skip
    return _attack_shard(ctx, target, cell, inputs, shard, make, attack_batch(ctx, target), p.restarts, p.keep_adv)


@cell_kind("ensemble", EnsembleParams, merge=_merge_robust, images=_ensemble_images, shard_size=_shard_size)
def ensemble_cell(
    ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None
) -> CellResult:
    """One shard of the suite's ``[ensemble]`` at one (norm, eps), reported as attack ``ensemble``;
    mask: the images that survived it (the worst case takes the minimum with the suite's attacks)."""
    p: EnsembleParams = cell.params
    assert shard is not None, "ensemble cells run by shard"
    s = p.settings
    make = partial(ATTACKS.get("ensemble"), eps=p.eps, norm=p.norm, steps=s.steps, restarts=s.restarts,
                   members=s.members, targets=s.targets, num_classes=ctx.data.num_classes)  # fmt: skip
    return _attack_shard(ctx, target, cell, inputs, shard, make, ctx.spec.eval_batch_size, 1, False,
                         ensemble_subset(ctx, s))  # fmt: skip


@cell_kind("worst_case", WorstCaseParams, needs_model=False, resources="cpu")
def worst_case_cell(
    ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None
) -> CellResult:
    """Per-example worst case over every attack run at this (norm, eps): robust only if all fail."""
    p: WorstCaseParams = cell.params
    subset = ensemble_subset(ctx, p.ensemble)
    masks = [stored.arrays["mask"] for stored in inputs.many("attack")]
    if subset is not None:  # the attacks ran on every image, the ensemble on the subset
        masks = [mask if len(mask) == len(subset) else mask[subset] for mask in masks]
    survived = torch.stack(masks).all(0)
    value = float(survived.float().mean())
    make = ctx.row(target.spec)
    rows = [make(metric="robust_acc", value=value, attack="worst_case", norm=p.norm, eps=p.eps, n=len(survived))]
    meta: dict = {}
    converged = headline_convergence(survived, subset, inputs.many("converge"), p.norm, p.eps)
    if converged is not None:
        passed, detail, notes = converged
        rows.append(make(metric="check_headline_converged", value=float(passed), norm=p.norm, eps=p.eps,
                         n=len(survived)))  # fmt: skip
        if passed and p.norm == "linf" and abs(p.eps - ctx.spec.check_eps) < 1e-12:  # the checks' own PGD too
            notes["more_steps"] = {"superseded": "the checks' PGD is not the headline; the worst case converged"}
        meta["checks"] = {f"headline_converged({p.norm},{p.eps:g})": {"passed": passed, "detail": detail}, **notes}
        if not passed:
            log.warning("%s: %s", target.name, detail)
    bound = certified_bound_check(target.spec.zoo, p.norm, p.eps, value, len(survived))
    if bound is not None:
        passed, detail = bound
        rows.append(make(metric="check_certified_bound", value=float(passed), norm=p.norm, eps=p.eps, n=len(survived)))
        meta.setdefault("checks", {})["certified_bound"] = {"passed": passed, "detail": detail}
        if not passed:
            log.warning("%s: %s", target.name, detail)
    return CellResult(rows, {"mask": survived}, meta)


def headline_convergence(survived: torch.Tensor, subset: torch.Tensor | None, converge: list, norm: str,
                         eps: float) -> tuple[bool, str, dict] | None:  # fmt: skip
    """Is the worst case (the headline) converged at this budget? Each attack's ``more_steps`` check
    ran the attack with more steps and restarts on the first images of the eval split; the headline is
    converged when, on the images both saw, it is no higher than every such stronger run (plus that
    check's tolerance). Returns (passed, detail, notes): the notes supersede an attack's own failed
    ``more_steps`` ("PGD-20 not converged here; the worst case is"), which then says nothing about the
    model's verdict. None when no attack at this budget has a stored stronger run."""
    runs = [c for c in converge if "stronger" in c.arrays]
    if not runs:
        return None
    positions = subset if subset is not None else torch.arange(len(survived))
    worst_by_image = dict(zip(positions.tolist(), survived.tolist(), strict=True))
    gaps, notes = [], {}
    for c in runs:
        stronger = c.arrays["stronger"]
        common = [i for i in range(len(stronger)) if i in worst_by_image]
        if not common:
            continue
        worst = sum(worst_by_image[i] for i in common) / len(common)
        more = float(stronger[common].float().mean())
        a, tol = c.cell.params.attack, c.cell.params.tolerance
        gaps.append((worst - more, tol, a.attack, worst, more, len(common)))
        key = f"more_steps({a.attack},{a.norm},{a.eps:g})"
        notes[key] = {"superseded": f"{a.attack} is not the headline: the worst case {worst:.3f} vs its stronger "
                      f"run {more:.3f} on {len(common)} images"}  # fmt: skip
    if not gaps:
        return None
    gap, tol, attack, worst, more, n = max(gaps)
    passed = gap <= tol
    detail = (f"worst case {worst:.3f} vs a stronger {attack} {more:.3f} on {n} images ({norm} {eps:g}): "
              + ("converged" if passed else "the headline is not converged; strengthen the ensemble"))  # fmt: skip
    return passed, detail, notes if passed else {}


def certified_bound_check(zoo: str | None, norm: str, eps: float, value: float, n: int) -> tuple[bool, str] | None:
    """A worst case against its zoo model's published *certified* lower bound at this (norm, eps):
    (passed, detail), failed when the whole 95% interval lies below the bound, which no correct attack
    can do (an evaluation or loading bug); None without a certified figure there."""

    entry = ZOO.get(zoo) if zoo is not None else None
    figures = [f for f in (entry.figures if entry else ()) if f.kind == "certified" and f.norm == norm
               and abs(f.eps - eps) < 1e-9]  # fmt: skip
    if not figures:
        return None
    bound, (low, high) = figures[0].value, clopper_pearson(value, n)
    if high >= bound:
        return True, f"worst case {value:.4f} [{low:.4f}, {high:.4f}] is consistent with the certified {bound:.4f}"
    return False, (f"worst case {value:.4f} [{low:.4f}, {high:.4f}] is below the certified lower bound {bound:.4f} "
                   f"of zoo:{zoo} at {norm} {eps:g}: impossible for a correct attack (wrong preprocessing or "
                   "checkpoint)")  # fmt: skip
