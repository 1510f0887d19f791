"""Everything measured on one prepared model: clean metrics, size, attacks, latency."""

from __future__ import annotations

import logging
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

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


def measure_model(ctx: _Context, mspec: ModelSpec, model: nn.Module, data: ImageDataset) -> list[Row]:
    spec = ctx.loaded.spec
    row = partial(
        Row, run_id=ctx.run_id, suite=spec.name, dataset=data.name, model=mspec.name, arch=mspec.arch,
        device=ctx.device.type,
    )  # fmt: skip
    rows: list[Row] = []
    x, y, n = data.x_eval, data.y_eval, len(data.y_eval)
    sample_shape = tuple(x.shape[1:])

    with ctx.stage("evaluate_clean"):
        logits = predict_logits(model, x, spec.eval_batch_size, ctx.device)
        pred = logits.argmax(1)
        clean_correct = pred == y
        clean_acc = accuracy(pred, y)
        rows += [
            row(metric="clean_acc", value=clean_acc, n=n),
            row(metric="macro_f1", value=macro_f1(pred, y, data.num_classes), n=n),
            row(metric="ece", value=expected_calibration_error(logits.softmax(1), y), n=n),
            row(metric="params", value=count_params(model)),
            row(metric="macs", value=count_macs(model, sample_shape)),
            row(metric="size_bytes", value=weights_size_bytes(model)),
        ]
    log.info("%s: clean accuracy %.4f on %d images", mspec.name, clean_acc, n)

    with ctx.stage("attack"):
        for ev in spec.evaluations:
            factory = ATTACKS.get(ev.attack)
            for eps in ev.eps:
                make = partial(
                    factory, eps=eps, norm=ev.norm, steps=ev.steps, step_size=ev.step_size,
                    num_classes=data.num_classes,
                )  # fmt: skip
                correct = robust_correct(
                    model, make, x, y, clean_correct, eps, ev.norm, batch_size=spec.eval_batch_size,
                    restarts=ev.restarts, seed=ctx.seed, device=ctx.device,
                    desc=f"{mspec.name} {ev.attack}-{ev.norm} eps={eps:.4g}", progress=ctx.progress,
                )  # fmt: skip
                robust = float(correct.float().mean())
                rows.append(row(metric="robust_acc", value=robust, attack=ev.attack, norm=ev.norm, eps=eps, n=n))
                log.info("%s: %s-%s eps=%.4g robust accuracy %.4f", mspec.name, ev.attack, ev.norm, eps, robust)

    if spec.latency.enabled:
        with ctx.stage("latency"):
            lat = spec.latency
            for s in torch_latency(
                model, sample_shape, lat.batch_sizes, ctx.device, lat.warmup, lat.min_repeats, lat.budget_s, ctx.seed
            ):
                for metric, value in (
                    ("latency_ms_p50", s.p50_ms),
                    ("latency_ms_p90", s.p90_ms),
                    ("latency_ms_p99", s.p99_ms),
                    ("throughput", s.throughput),
                ):
                    rows.append(row(metric=metric, value=value, n=s.repeats, batch_size=s.batch_size))
    return rows
