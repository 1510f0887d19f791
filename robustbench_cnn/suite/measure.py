"""Cell executors: everything measured on one prepared model (clean, attacks, certification, checks, latency)."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.builtin import default_step_size
from robustbench_cnn.attacks.crafting import Autocast, Crafting, crafting_model
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.attacks.preflight import EOT, is_randomized
from robustbench_cnn.data import ImageDataset
from robustbench_cnn.metrics import accuracy, expected_calibration_error, macro_f1
from robustbench_cnn.runtime.torch_runtime import count_macs, count_params, torch_latency
from robustbench_cnn.seeds import derived_seed
from robustbench_cnn.suite.results import Row
from robustbench_cnn.suite.spec import ModelSpec
from robustbench_cnn.train.cache import save_weights

if TYPE_CHECKING:
    from robustbench_cnn.suite.runner import _Context

log = logging.getLogger(__name__)


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits ``(N, K)`` on the CPU for images ``x`` in [0, 1], in eval + inference mode."""
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(xb.to(device)).float().cpu() for xb in x.split(batch_size)])


def weights_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's fp32 safetensors file, as it would be shipped."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        save_weights(model, path)
        return path.stat().st_size


Executor = Callable[..., tuple[list[Row], dict[str, torch.Tensor]]]
"""``(ctx, mspec, model, data, cell, arrays, surrogate) -> (rows, arrays to store)``; ``arrays`` maps
the labels of the cells this one depends on to what they stored (``mask``, ``adv``)."""


def crafting_for(ctx: _Context, mspec: ModelSpec, model: nn.Module, data: ImageDataset) -> tuple[Crafting, nn.Module]:
    """The suite's crafting settings and the module this model's attacks craft on (built once per
    model, verified on the first eval images)."""
    perf = ctx.loaded.spec.performance
    if perf.attack_precision == "auto" or perf.compile == "auto":
        raise ValueError("crafting settings are resolved for the device before cells run (device_defaults)")
    crafting = Crafting(perf.fold_batchnorm, perf.attack_precision, perf.compile)
    if mspec.name not in ctx.attackers:
        probe_x, probe_y = data.x_eval[:8].to(ctx.device), data.y_eval[:8].to(ctx.device)
        attacker = crafting_model(model.eval(), crafting, probe_x, probe_y, ctx.device)
        if is_randomized(model, probe_x):  # attack the expectation (Athalye et al. 2018)
            samples = ctx.loaded.spec.checks.eot_samples
            log.warning("%s: two identical forward passes differ; attacks use EOT over %d samples", mspec.name, samples)
            attacker = EOT(attacker, samples).eval()
        ctx.attackers[mspec.name] = attacker
    return crafting, ctx.attackers[mspec.name]


def attack_batch(ctx: _Context, mspec: ModelSpec, model: nn.Module, data: ImageDataset) -> int:
    """Images per attack batch for this model: the suite's ``attack_batch_size``, else what fits the device."""
    from robustbench_cnn.suite.device_defaults import fitting_batch

    spec = ctx.loaded.spec
    if spec.performance.attack_batch_size is not None:
        return spec.performance.attack_batch_size
    if mspec.name not in ctx.attack_batches:
        shape = tuple(data.x_eval.shape[1:])
        ctx.attack_batches[mspec.name] = fitting_batch(model, shape, ctx.device, spec.eval_batch_size)
    return ctx.attack_batches[mspec.name]


def row_factory(ctx: _Context, mspec: ModelSpec, data: ImageDataset) -> Callable[..., Row]:
    return partial(
        Row, run_id=ctx.run_id, suite=ctx.loaded.spec.name, dataset=data.name, model=mspec.name, arch=mspec.arch,
        defense=mspec.defense_name, compression=mspec.compression, device=ctx.device.type,
    )  # fmt: skip


def clean_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """Clean accuracy, macro F1, ECE, params, MACs, size; mask: clean-correct images."""
    row = row_factory(ctx, mspec, data)
    x, y, n = data.x_eval, data.y_eval, len(data.y_eval)
    logits = predict_logits(model, x, ctx.loaded.spec.eval_batch_size, ctx.device)
    pred = logits.argmax(1)
    clean_acc = accuracy(pred, y)
    log.info("%s: clean accuracy %.4f on %d images", mspec.name, clean_acc, n)
    rows = [
        row(metric="clean_acc", value=clean_acc, n=n),
        row(metric="macro_f1", value=macro_f1(pred, y, data.num_classes), n=n),
        row(metric="ece", value=expected_calibration_error(logits.softmax(1), y), n=n),
        row(metric="params", value=count_params(model)),
        row(metric="macs", value=count_macs(model, tuple(x.shape[1:]))),
        row(metric="size_bytes", value=weights_size_bytes(model)),
    ]
    rows.append(_trained_row(ctx, mspec, data, row, clean_acc, n))
    if ctx.loaded.spec.performance.attack_precision == "bf16":  # the crafting precision's parity
        pred_bf16 = predict_logits(Autocast(model), x, ctx.loaded.spec.eval_batch_size, ctx.device).argmax(1)
        rows.append(row(metric="clean_acc_bf16", value=accuracy(pred_bf16, y), n=n))
        rows.append(row(metric="bf16_agreement", value=float((pred_bf16 == pred).float().mean()), n=n))
    return rows, {"mask": pred == y}


def _trained_row(ctx: _Context, mspec: ModelSpec, data: ImageDataset, row, clean_acc: float, n: int) -> Row:
    """``check_trained``: 0 when the clean accuracy, or the final training accuracy, is under the
    suite's floor (default twice chance): an undertrained model's robustness numbers mean little."""
    floor = ctx.loaded.spec.checks.min_clean_acc
    floor = 2 / data.num_classes if floor is None else floor
    train_acc = ctx.manifest["models"][mspec.name].get("final_train_acc")
    low = [f"clean {clean_acc:.3f}"] if clean_acc < floor else []
    if isinstance(train_acc, float) and train_acc < floor:
        low.append(f"training {train_acc:.3f}")
    if low:
        log.warning("%s: undertrained (%s < %.3f): its robustness rows say little", mspec.name, ", ".join(low), floor)
        ctx.manifest["models"][mspec.name]["undertrained"] = f"{', '.join(low)} accuracy < {floor:.3f}"
    return row(metric="check_trained", value=0.0 if low else 1.0, n=n)


def attack_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """``robust_acc`` of one attack at one eps; mask: images that survived it."""
    spec, p = ctx.loaded.spec, dict(cell.params)
    x, y, n = data.x_eval, data.y_eval, len(data.y_eval)
    make = partial(ATTACKS.get(p["attack"]), eps=p["eps"], norm=p["norm"], steps=p["steps"],
                   step_size=p["step_size"], num_classes=data.num_classes)  # fmt: skip
    exported = any(ex.models is None or mspec.name in ex.models for ex in spec.exports)
    adv = x.clone() if exported else None  # kept to evaluate the deployed artefacts on the same examples
    crafting, attacker = crafting_for(ctx, mspec, model, data)
    correct = robust_correct(
        model, make, x, y, arrays[cell.deps[0]]["mask"], p["eps"], p["norm"],
        batch_size=attack_batch(ctx, mspec, model, data),
        restarts=p["restarts"], seed=derived_seed(ctx.seed, cell.label), device=ctx.device,
        desc=f"{mspec.name} {cell.label}", progress=ctx.progress, adv_out=adv, crafting=crafting, attacker=attacker,
    )  # fmt: skip
    robust = float(correct.float().mean())
    log.info("%s: %s robust accuracy %.4f", mspec.name, cell.label, robust)
    row = row_factory(ctx, mspec, data)
    rows = [row(metric="robust_acc", value=robust, attack=p["attack"], norm=p["norm"], eps=p["eps"], n=n)]
    return rows, {"mask": correct} if adv is None else {"mask": correct, "adv": adv}


def ensemble_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """``robust_acc`` of the suite's ``[ensemble]`` at one (norm, eps), as attack ``ensemble``; mask:
    the images that survived it (the worst case takes the minimum with the suite's attacks)."""
    spec, p = ctx.loaded.spec, dict(cell.params)
    make = partial(ATTACKS.get("ensemble"), eps=p["eps"], norm=p["norm"], steps=p["steps"], restarts=p["restarts"],
                   members=p["members"], targets=p["targets"], num_classes=data.num_classes)  # fmt: skip
    crafting, attacker = crafting_for(ctx, mspec, model, data)
    correct = robust_correct(
        model, make, data.x_eval, data.y_eval, arrays[cell.deps[0]]["mask"], p["eps"], p["norm"],
        batch_size=spec.eval_batch_size, seed=ctx.seed, device=ctx.device, desc=f"{mspec.name} {cell.label}",
        progress=ctx.progress, crafting=crafting, attacker=attacker,
    )  # fmt: skip
    value = float(correct.float().mean())
    log.info("%s: %s robust accuracy %.4f", mspec.name, cell.label, value)
    row = row_factory(ctx, mspec, data)
    return [row(metric="robust_acc", value=value, attack="ensemble", norm=p["norm"], eps=p["eps"], n=len(correct))], {
        "mask": correct
    }


def record_checks(ctx: _Context, mspec: ModelSpec, results: dict) -> None:
    """Add check results (``{name: CheckResult}``) to the model's manifest entry; warn on failures."""
    entry = ctx.manifest["models"][mspec.name].setdefault("checks", {})
    for name, r in results.items():
        entry[name] = {"passed": r.passed, "detail": r.detail}
        if not r.passed:
            log.warning("%s: sanity check %s failed (%s): evaluation unreliable", mspec.name, name, r.detail)


def preflight_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """``check_logits``, ``check_num_classes`` and ``randomized`` (1: two identical passes differ, so
    attacks use EOT) on the first 64 eval images."""
    from robustbench_cnn.attacks.preflight import preflight

    probe = data.x_eval[:64].to(ctx.device)
    results, randomized = preflight(model, probe, cell.param("attacks"))
    record_checks(ctx, mspec, {r.name: r for r in results})
    ctx.manifest["models"][mspec.name]["randomized"] = randomized
    row = row_factory(ctx, mspec, data)
    rows = [row(metric=f"check_{r.name}", value=float(r.passed), n=len(probe)) for r in results]
    return [*rows, row(metric="randomized", value=float(randomized), n=len(probe))], {}


def converge_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """``check_more_steps`` at one attack's budget: the reported attack (its own step size) against
    ``more_steps_factor`` x its steps with ``more_restarts`` restarts, on the first ``eval_size`` images."""
    from robustbench_cnn.attacks.sanity import convergence

    p, k = dict(cell.params), cell.param("eval_size")
    step = default_step_size(p["eps"], p["steps"], p["step_size"])  # fixed: more steps, same step

    def make(steps: int):
        return partial(ATTACKS.get(p["attack"]), eps=p["eps"], norm=p["norm"], steps=steps, step_size=step,
                       num_classes=data.num_classes)  # fmt: skip

    crafting, attacker = crafting_for(ctx, mspec, model, data)
    result = convergence(
        model, make, data.x_eval[:k], data.y_eval[:k], arrays[cell.deps[0]]["mask"][:k], p["eps"], p["norm"],
        p["steps"], reported=arrays[cell.deps[1]]["mask"][:k], restarts=p["restarts"],
        more_steps_factor=p["more_steps_factor"], more_restarts=p["more_restarts"], tolerance=p["tolerance"],
        label=p["attack"], batch_size=ctx.loaded.spec.eval_batch_size, seed=ctx.seed, device=ctx.device,
        progress=False, crafting=crafting, attacker=attacker,
    )  # fmt: skip
    record_checks(ctx, mspec, {f"more_steps({p['attack']},{p['norm']},{p['eps']:g})": result})
    row = row_factory(ctx, mspec, data)
    n = len(data.y_eval[:k])
    return [row(metric="check_more_steps", value=float(result.passed), attack=p["attack"], norm=p["norm"],
                eps=p["eps"], n=n)], {}  # fmt: skip


def worst_case_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """Per-example worst case over every attack run at this (norm, eps): robust only if all fail."""
    survived = torch.stack([arrays[label]["mask"] for label in cell.deps]).all(0)
    row = row_factory(ctx, mspec, data)
    value = float(survived.float().mean())
    rows = [row(metric="robust_acc", value=value, attack="worst_case", norm=cell.param("norm"), eps=cell.param("eps"),
                n=len(survived))]  # fmt: skip
    return rows, {"mask": survived}


def certify_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """``certified_acc`` at each radius: certified, correct and radius >= r (Cohen et al. 2019).

    Each image draws its noise from its own generator, seeded by (run seed, image index), so a
    certificate does not depend on the images certified before it. Arrays: one record per image, as
    Cohen et al.'s ``certify.py`` writes (``label``, ``prediction``, ``radius``, ``p_lower``, and
    ``count``: the top class's samples of n)."""
    from robustbench_cnn.defenses.smoothing import ABSTAIN, Smoothed

    row, sigma = row_factory(ctx, mspec, data), cell.param("sigma")
    cfg = ctx.loaded.spec.certify  # resolved for the device: runtime and batch size are concrete
    x, y = data.x_eval[: cfg.eval_size].to(ctx.device), data.y_eval[: cfg.eval_size]
    smoothed = Smoothed(model, data.num_classes, sigma, cfg.batch_size, cfg.runtime, cfg.precision, cfg.compile)
    verified = smoothed.verify_fast(x[0], cfg.n, derived_seed(ctx.seed, "certify-probe"), cfg.count_tolerance)
    start = time.perf_counter()
    bar = tqdm(list(enumerate(x)), desc=f"certify {mspec.name}", disable=not ctx.progress, leave=False)
    certs = []
    for i, xi in bar:
        gen = torch.Generator(device=ctx.device).manual_seed(derived_seed(ctx.seed, "certify", i))
        certs.append(smoothed.certify(xi, cfg.n0, cfg.n, cfg.alpha, gen))
    seconds = time.perf_counter() - start
    labels = torch.tensor([c.label for c in certs])
    radii = torch.tensor([c.radius for c in certs])
    abstain = float((labels == ABSTAIN).float().mean())
    ctx.manifest["models"][mspec.name]["certify"] = {
        "sigma": sigma, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha, "images": len(y), "runtime": cfg.runtime,
        "batch_size": cfg.batch_size, "precision": cfg.precision if verified else "fp32",
        "abstain_rate": abstain, "seconds_per_image": round(seconds / max(len(y), 1), 4),
    }  # fmt: skip
    rows = []
    for r in cfg.radii:
        acc = float(((labels == y) & (radii >= r)).float().mean())
        rows.append(row(metric="certified_acc", value=acc, attack="smoothing", norm="l2", eps=r, n=len(y)))
    log.info("%s: certified accuracy at radius 0: %.3f (abstain %.3f)", mspec.name, rows[0].value, abstain)
    records = {"label": y.clone(), "prediction": labels, "radius": radii,
               "p_lower": torch.tensor([c.p_lower for c in certs], dtype=torch.float64),
               "count": torch.tensor([c.count for c in certs])}  # fmt: skip
    return rows, records


def checks_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """Gradient-masking sanity checks as ``check_<name>`` rows (1 passed, 0 failed)."""
    from robustbench_cnn.attacks.sanity import run_checks

    row = row_factory(ctx, mspec, data)
    spec = ctx.loaded.spec
    cfg, eps = spec.checks, spec.check_eps
    pgd = [ev for ev in spec.evaluations if ev.attack == "pgd" and ev.norm == "linf" and eps in ev.eps]
    step_size = pgd[0].step_size if pgd else None  # the reported PGD's own step (default 2.5 * eps / steps)
    crafting, attacker = crafting_for(ctx, mspec, model, data)
    results = run_checks(
        model, data.x_eval[: cfg.eval_size], data.y_eval[: cfg.eval_size], eps, surrogate, steps=cfg.steps,
        more_steps_factor=cfg.more_steps_factor, more_restarts=cfg.more_restarts, large_eps=cfg.large_eps,
        large_eps_max_acc=cfg.large_eps_max_acc, tolerance=cfg.tolerance, seed=ctx.seed, device=ctx.device,
        crafting=crafting, attacker=attacker, step_size=step_size,
    )  # fmt: skip
    record_checks(ctx, mspec, {r.name: r for r in results})
    n = min(cfg.eval_size, len(data.y_eval))
    return [row(metric=f"check_{r.name}", value=float(r.passed), norm="linf", eps=eps, n=n) for r in results], {}


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
                          s.samples_ms)  # fmt: skip
        rows += cell
    return rows


def latency_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """Torch eager latency percentiles, spread and throughput per batch size (raw samples in the run's
    ``latency_samples/``)."""
    from robustbench_cnn.runtime.samples import samples_dir

    lat, shape = ctx.loaded.spec.latency, tuple(data.x_eval.shape[1:])
    stats = torch_latency(
        model, shape, lat.batch_sizes, ctx.device, lat.warmup, lat.min_repeats, lat.budget_s, ctx.seed
    )
    return latency_rows(row_factory(ctx, mspec, data), stats, samples_dir(ctx.run_dir)), {}


def export_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """Export and measure on the export's runtime (imported lazily: onnx/onnxruntime are heavy)."""
    from robustbench_cnn.export.measure import export_cell as run

    return run(ctx, mspec, model, data, cell, arrays, surrogate)


EXECUTORS: dict[str, Executor] = {
    "clean": clean_cell,
    "attack": attack_cell,
    "preflight": preflight_cell,
    "converge": converge_cell,
    "ensemble": ensemble_cell,
    "worst_case": worst_case_cell,
    "certify": certify_cell,
    "checks": checks_cell,
    "latency": latency_cell,
    "export": export_cell,
}
