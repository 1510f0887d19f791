"""Everything measured on one prepared model: clean metrics, size, attacks, latency."""

from __future__ import annotations

import logging
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.data import ImageDataset
from robustbench_cnn.metrics import accuracy, expected_calibration_error, macro_f1
from robustbench_cnn.runtime.torch_runtime import count_macs, count_params, torch_latency
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


def measure_model(
    ctx: _Context, mspec: ModelSpec, model: nn.Module, data: ImageDataset, surrogate: nn.Module | None = None
) -> list[Row]:
    """All rows for one model: clean metrics and size, attacks, certification, checks, latency."""
    row = partial(
        Row, run_id=ctx.run_id, suite=ctx.loaded.spec.name, dataset=data.name, model=mspec.name, arch=mspec.arch,
        defense=mspec.defense_name, device=ctx.device.type,
    )  # fmt: skip
    with ctx.stage("evaluate_clean"):
        rows, clean_correct = _clean_rows(ctx, mspec, model, data, row)
    with ctx.stage("attack"):
        rows += _attack_rows(ctx, mspec, model, data, clean_correct, row)
    sigma = getattr(mspec.defense, "sigma", None)
    if sigma is not None:
        with ctx.stage("certify"):
            rows += _certify_rows(ctx, mspec, model, data, sigma, row)
    if ctx.loaded.spec.checks.enabled:
        with ctx.stage("checks"):
            rows += _check_rows(ctx, mspec, model, data, surrogate, row)
    if ctx.loaded.spec.latency.enabled:
        with ctx.stage("latency"):
            rows += _latency_rows(ctx, model, data, row)
    return rows


def _clean_rows(ctx, mspec, model, data, row) -> tuple[list[Row], torch.Tensor]:
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
    return rows, pred == y


def _attack_rows(ctx, mspec, model, data, clean_correct, row) -> list[Row]:
    """``robust_acc`` per attack and eps, plus a per-example ``worst_case`` row per (norm, eps)
    wherever two or more attacks ran (an image counts only if it survives all of them)."""
    spec = ctx.loaded.spec
    x, y, n = data.x_eval, data.y_eval, len(data.y_eval)
    rows: list[Row] = []
    survivors: dict[tuple[str, float], list[torch.Tensor]] = {}
    for ev in spec.evaluations:
        factory = ATTACKS.get(ev.attack)
        for eps in ev.eps:
            make = partial(factory, eps=eps, norm=ev.norm, steps=ev.steps, step_size=ev.step_size,
                           num_classes=data.num_classes)  # fmt: skip
            correct = robust_correct(
                model, make, x, y, clean_correct, eps, ev.norm, batch_size=spec.eval_batch_size,
                restarts=ev.restarts, seed=ctx.seed, device=ctx.device,
                desc=f"{mspec.name} {ev.attack}-{ev.norm} eps={eps:.4g}", progress=ctx.progress,
            )  # fmt: skip
            survivors.setdefault((ev.norm, eps), []).append(correct)
            robust = float(correct.float().mean())
            rows.append(row(metric="robust_acc", value=robust, attack=ev.attack, norm=ev.norm, eps=eps, n=n))
            log.info("%s: %s-%s eps=%.4g robust accuracy %.4f", mspec.name, ev.attack, ev.norm, eps, robust)
    for (norm, eps), masks in survivors.items():
        if len(masks) > 1:
            worst = float(torch.stack(masks).all(0).float().mean())
            rows.append(row(metric="robust_acc", value=worst, attack="worst_case", norm=norm, eps=eps, n=n))
    return rows


def _certify_rows(ctx, mspec, model, data, sigma: float, row) -> list[Row]:
    """``certified_acc`` at each radius: certified, correct and radius >= r (Cohen et al. 2019)."""
    from robustbench_cnn.defenses.smoothing import ABSTAIN, Smoothed

    cfg = ctx.loaded.spec.certify
    x, y = data.x_eval[: cfg.eval_size].to(ctx.device), data.y_eval[: cfg.eval_size]
    smoothed = Smoothed(model, data.num_classes, sigma, cfg.batch_size)
    gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
    start = time.perf_counter()
    bar = tqdm(x, desc=f"certify {mspec.name}", disable=not ctx.progress, leave=False)
    certs = [smoothed.certify(xi, cfg.n0, cfg.n, cfg.alpha, gen) for xi in bar]
    seconds = time.perf_counter() - start
    labels = torch.tensor([c.label for c in certs])
    radii = torch.tensor([c.radius for c in certs])
    abstain = float((labels == ABSTAIN).float().mean())
    ctx.manifest["models"][mspec.name]["certify"] = {
        "sigma": sigma, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha, "images": len(y),
        "abstain_rate": abstain, "seconds_per_image": round(seconds / max(len(y), 1), 4),
    }  # fmt: skip
    rows = []
    for r in cfg.radii:
        acc = float(((labels == y) & (radii >= r)).float().mean())
        rows.append(row(metric="certified_acc", value=acc, attack="smoothing", norm="l2", eps=r, n=len(y)))
    log.info("%s: certified accuracy at radius 0: %.3f (abstain %.3f)", mspec.name, rows[0].value, abstain)
    return rows


def _check_rows(ctx, mspec, model, data, surrogate, row) -> list[Row]:
    from robustbench_cnn.attacks.sanity import run_checks

    spec = ctx.loaded.spec
    cfg, eps = spec.checks, spec.check_eps
    results = run_checks(
        model, data.x_eval[: cfg.eval_size], data.y_eval[: cfg.eval_size], eps, surrogate, steps=cfg.steps,
        more_steps_factor=cfg.more_steps_factor, more_restarts=cfg.more_restarts, large_eps=cfg.large_eps,
        large_eps_max_acc=cfg.large_eps_max_acc, tolerance=cfg.tolerance, seed=ctx.seed, device=ctx.device,
    )  # fmt: skip
    ctx.manifest["models"][mspec.name]["checks"] = {r.name: {"passed": r.passed, "detail": r.detail} for r in results}
    for r in results:
        if not r.passed:
            log.warning("%s: sanity check %s failed (%s): evaluation unreliable", mspec.name, r.name, r.detail)
    n = min(cfg.eval_size, len(data.y_eval))
    return [row(metric=f"check_{r.name}", value=float(r.passed), norm="linf", eps=eps, n=n) for r in results]


def _latency_rows(ctx, model, data, row) -> list[Row]:
    lat = ctx.loaded.spec.latency
    rows = []
    shape = tuple(data.x_eval.shape[1:])
    for s in torch_latency(
        model, shape, lat.batch_sizes, ctx.device, lat.warmup, lat.min_repeats, lat.budget_s, ctx.seed
    ):
        for metric, value in (
            ("latency_ms_p50", s.p50_ms),
            ("latency_ms_p90", s.p90_ms),
            ("latency_ms_p99", s.p99_ms),
            ("throughput", s.throughput),
        ):
            rows.append(row(metric=metric, value=value, n=s.repeats, batch_size=s.batch_size))
    return rows
