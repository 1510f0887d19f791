"""Cell executors of one prepared model: clean accuracy, pre-flight checks, convergence and
sanity checks, latency (attacks: :mod:`.measure_attack`; certification: :mod:`.measure_certify`).

Every executor has the signature of :data:`robustbench_cnn.engine.kinds.Run` and returns a
:class:`CellResult`; nothing writes to the run manifest: facts for it go in the result's ``meta``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.builtin import default_step_size
from robustbench_cnn.attacks.crafting import Autocast, crafting_model
from robustbench_cnn.attacks.preflight import EOT, is_randomized
from robustbench_cnn.contract.results import Row
from robustbench_cnn.engine.cells import (
    Cell,
    CellResult,
    ChecksParams,
    CleanParams,
    ConvergeParams,
    Inputs,
    LatencyParams,
    PreflightParams,
    Shard,
)
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.kinds import cell_kind
from robustbench_cnn.engine.plan import crafting
from robustbench_cnn.metrics import accuracy, expected_calibration_error, macro_f1
from robustbench_cnn.runtime.torch_runtime import count_macs, count_params, torch_latency
from robustbench_cnn.train.cache import weights_bytes

log = logging.getLogger(__name__)


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits ``(N, K)`` on the CPU for images ``x`` in [0, 1], in eval + inference mode."""
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(xb.to(device)).float().cpu() for xb in x.split(batch_size)])


def weights_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's fp32 safetensors file, as it would be shipped (serialized in memory)."""
    return len(weights_bytes(model))


def crafting_for(ctx: RunContext, target: ModelUnderTest) -> nn.Module:
    """The module this model's attacks craft on: built once per model and process, verified on the
    first eval images; an EOT wrapper if two identical forward passes differ (Athalye et al. 2018)."""
    if target.attacker is None:
        data = ctx.data
        probe_x, probe_y = data.x_eval[:8].to(ctx.device), data.y_eval[:8].to(ctx.device)
        attacker = crafting_model(target.model.eval(), crafting(ctx.spec), probe_x, probe_y, ctx.device)
        if is_randomized(target.model, probe_x):
            samples = ctx.spec.checks.eot_samples
            log.warning(
                "%s: two identical forward passes differ; attacks use EOT over %d samples", target.name, samples
            )
            attacker = EOT(attacker, samples).eval()
        target.attacker = attacker
    return target.attacker


def attack_batch(ctx: RunContext, target: ModelUnderTest) -> int:
    """Images per attack batch for this model: the suite's ``attack_batch_size``, else what fits the device."""
    from robustbench_cnn.engine.devices import fitting_batch

    if ctx.spec.performance.attack_batch_size is not None:
        return ctx.spec.performance.attack_batch_size
    if target.attack_batch is None:
        shape = tuple(ctx.data.x_eval.shape[1:])
        target.attack_batch = fitting_batch(target.model, shape, ctx.device, ctx.spec.eval_batch_size)
    return target.attack_batch


@cell_kind("clean", CleanParams)
def clean_cell(ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None) -> CellResult:
    """Clean accuracy, macro F1, ECE, params, MACs, size; mask: clean-correct images."""
    row, data, model = ctx.row(target.spec), ctx.data, target.model
    x, y, n = data.x_eval, data.y_eval, len(data.y_eval)
    logits = predict_logits(model, x, ctx.spec.eval_batch_size, ctx.device)
    pred = logits.argmax(1)
    clean_acc = accuracy(pred, y)
    log.info("%s: clean accuracy %.4f on %d images", target.name, clean_acc, n)
    rows = [
        row(metric="clean_acc", value=clean_acc, n=n),
        row(metric="macro_f1", value=macro_f1(pred, y, data.num_classes), n=n),
        row(metric="ece", value=expected_calibration_error(logits.softmax(1), y), n=n),
        row(metric="params", value=count_params(model)),
        row(metric="macs", value=count_macs(model, tuple(x.shape[1:]))),
        row(metric="size_bytes", value=weights_size_bytes(model)),
    ]
    trained, meta = _trained_row(ctx, target, row, clean_acc, n)
    rows.append(trained)
    published = published_clean_check(target.spec.zoo, clean_acc, n)
    if published is not None:
        passed, detail = published
        rows.append(row(metric="check_published_clean", value=1.0 if passed else 0.0, n=n))
        meta["checks"] = {"published_clean": {"passed": passed, "detail": detail}}
        if not passed:
            log.warning("%s: %s", target.name, detail)
    if cell.params.attack_precision == "bf16":  # the crafting precision's parity
        pred_bf16 = predict_logits(Autocast(model), x, ctx.spec.eval_batch_size, ctx.device).argmax(1)
        rows.append(row(metric="clean_acc_bf16", value=accuracy(pred_bf16, y), n=n))
        rows.append(row(metric="bf16_agreement", value=float((pred_bf16 == pred).float().mean()), n=n))
    return CellResult(rows, {"mask": pred == y}, meta)


def published_clean_check(zoo: str | None, clean_acc: float, n: int) -> tuple[bool, str] | None:
    """A zoo model's clean accuracy against its published figure: (passed, detail), passed when the
    95% Clopper-Pearson interval of the measured accuracy contains the published one; None when the
    model has no published clean figure. A contradiction is the symptom of wrong preprocessing or
    the wrong file, and makes every robust number of the model unreliable."""
    from robustbench_cnn.metrics import clopper_pearson
    from robustbench_cnn.zoo import ZOO

    entry = ZOO.get(zoo) if zoo is not None else None
    published = next((f.value for f in entry.figures if f.kind == "clean"), None) if entry is not None else None
    if published is None:
        return None
    low, high = clopper_pearson(clean_acc, n)
    if low <= published <= high:
        return True, f"clean {clean_acc:.4f} [{low:.4f}, {high:.4f}] contains the published {published:.4f}"
    return False, (f"clean accuracy {clean_acc:.4f} [{low:.4f}, {high:.4f}] contradicts the published {published:.4f} "
                   f"of zoo:{zoo}: wrong preprocessing or the wrong checkpoint")  # fmt: skip


def _trained_row(ctx: RunContext, target: ModelUnderTest, row, clean_acc: float, n: int) -> tuple[Row, dict]:
    """``check_trained``: 0 when the clean accuracy, or the final training accuracy, is under the
    suite's floor (default twice chance): an undertrained model's robustness numbers mean little."""
    floor = ctx.spec.checks.min_clean_acc
    floor = 2 / ctx.data.num_classes if floor is None else floor
    train_acc = target.info.get("final_train_acc")
    low = [f"clean {clean_acc:.3f}"] if clean_acc < floor else []
    if isinstance(train_acc, float) and train_acc < floor:
        low.append(f"training {train_acc:.3f}")
    meta = {}
    if low:
        log.warning("%s: undertrained (%s < %.3f): its robustness rows say little", target.name, ", ".join(low), floor)
        meta["undertrained"] = f"{', '.join(low)} accuracy < {floor:.3f}"
    return row(metric="check_trained", value=0.0 if low else 1.0, n=n), meta


def checks_meta(target: ModelUnderTest, results: dict, decides: bool = True) -> dict:
    """Check results (``{name: CheckResult}``) as manifest facts; warns on failures. ``decides=False``:
    an attack's own convergence, which the worst case at its budget may supersede (logged as such)."""
    for name, r in results.items():
        if r.passed:
            continue
        if decides:
            log.warning("%s: sanity check %s failed (%s): evaluation unreliable", target.name, name, r.detail)
        else:
            log.info("%s: %s not converged (%s); the worst case at this budget decides the verdict", target.name,
                     name, r.detail)  # fmt: skip
    return {"checks": {name: {"passed": r.passed, "detail": r.detail} for name, r in results.items()}}


@cell_kind("preflight", PreflightParams)
def preflight_cell(
    ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None
) -> CellResult:
    """``check_logits``, ``check_num_classes``, ``randomized`` (1: two identical passes differ, so
    attacks use EOT) and ``check_eot`` (0: randomized, but attacked through fewer than 2 passes) on
    the first 64 eval images."""
    from robustbench_cnn.attacks.preflight import eot_check, preflight

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
    from robustbench_cnn.attacks.sanity import convergence

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
    from robustbench_cnn.attacks.sanity import run_checks

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


def latency_rows(row: Callable[..., Row], stats, samples_dir: Path | None = None, **fields) -> list[Row]:
    """p50/p90/p99 latency, spread (IQR, std) and throughput rows per batch size, from the latency
    harness's stats; with ``samples_dir``, each batch size's raw per-call timings are stored there too
    (:mod:`robustbench_cnn.runtime.samples`), keyed like its rows."""
    from robustbench_cnn.runtime.samples import SampleKey, write_samples

    rows = []
    for s in stats:
        cell = [
            row(metric=metric, value=value, n=s.repeats, batch_size=s.batch_size, **fields)
            for metric, value in (("latency_ms_p50", s.p50_ms), ("latency_ms_p90", s.p90_ms),
                                  ("latency_ms_p99", s.p99_ms), ("latency_ms_iqr", s.iqr_ms),
                                  ("latency_ms_std", s.std_ms), ("throughput", s.throughput))
        ]  # fmt: skip
        if samples_dir is not None and s.samples_ms is not None:
            r = cell[0]
            write_samples(samples_dir, SampleKey(r.model, r.format, r.runtime, r.compression, s.batch_size),
                          s.samples_ms, s.waited_ms)  # fmt: skip
        rows += cell
    return rows


@cell_kind("latency", LatencyParams, resources="node")
def latency_cell(
    ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None
) -> CellResult:
    """Torch eager latency percentiles, spread and throughput per batch size (raw samples in the run's
    ``latency_samples/``)."""
    from robustbench_cnn.runtime.samples import samples_dir

    lat, shape = cell.params.settings, tuple(ctx.data.x_eval.shape[1:])
    stats = torch_latency(
        target.model, shape, lat.batch_sizes, ctx.device, lat.warmup, lat.min_repeats, lat.budget_s, ctx.seed
    )
    return CellResult(latency_rows(ctx.row(target.spec), stats, samples_dir(ctx.run_dir)))
