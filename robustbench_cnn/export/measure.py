"""The ``export`` cell: export one model, check parity with its torch source, measure it there,
and evaluate it on the adversarial examples crafted on the float model (transfer robustness of the
deployed artefact).

Parity thresholds (on the eval set, fail loudly with the numbers): fp32 exports agree with torch on
>= 99.5% of top-1 predictions with max |logit difference| <= 1e-3 x the largest |logit|; int8
exports agree on >= 97% and lose <= 2 points of accuracy.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.export.onnx import export_onnx, quantize_int8
from robustbench_cnn.runtime.onnx_runtime import OrtModel

log = logging.getLogger(__name__)

FP32_AGREEMENT, FP32_REL_DIFF = 0.995, 1e-3
INT8_AGREEMENT, INT8_MAX_LOSS = 0.97, 0.02


class ParityError(RobustBenchError):
    """An exported model disagrees with its torch source beyond the stated tolerance."""


def check_parity(precision: str, agreement: float, max_diff: float, scale: float, acc_loss: float) -> None:
    if precision == "fp32" and (agreement < FP32_AGREEMENT or max_diff > FP32_REL_DIFF * scale):
        raise ParityError(f"fp32 export: top-1 agreement {agreement:.4f} (>= {FP32_AGREEMENT} needed), "
                          f"max |dlogit| {max_diff:.3g} (<= {FP32_REL_DIFF * scale:.3g} needed)")  # fmt: skip
    if precision == "int8" and (agreement < INT8_AGREEMENT or acc_loss > INT8_MAX_LOSS):
        raise ParityError(f"int8 export: top-1 agreement {agreement:.4f} (>= {INT8_AGREEMENT} needed), "
                          f"accuracy loss {acc_loss * 100:.2f} pt (<= {INT8_MAX_LOSS * 100:.0f} needed)")  # fmt: skip


def export_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """Rows for the exported model: clean accuracy, parity, size, latency (format/runtime columns set)."""
    from robustbench_cnn.suite.measure import latency_rows, predict_logits, row_factory

    p = dict(cell.params)
    spec = ctx.loaded.spec
    out_dir = ctx.run_dir / "exports"
    shape = tuple(data.x_eval.shape[1:])
    fp32_path = out_dir / f"{mspec.name}.onnx"
    if not fp32_path.is_file():
        with tempfile.TemporaryDirectory(dir=ctx.run_dir) as tmp:  # written whole, then moved in place
            tmp_path = export_onnx(model, shape, Path(tmp) / fp32_path.name, opset=p["opset"])
            out_dir.mkdir(exist_ok=True)
            tmp_path.replace(fp32_path)
    path = fp32_path
    if p["precision"] == "int8":
        gen = torch.Generator().manual_seed(ctx.seed)
        idx = torch.randperm(len(data.y_train), generator=gen)[: p["calibration_size"]]
        path = quantize_int8(
            fp32_path, out_dir / f"{mspec.name}.int8.onnx", data.x_train[idx].numpy(), p["per_channel"]
        )

    x, y = data.x_eval, data.y_eval
    torch_logits = predict_logits(model, x, spec.eval_batch_size, ctx.device).numpy()
    ort_model = OrtModel(path, ctx.device.type)
    logits = ort_model.predict(x.numpy(), spec.eval_batch_size)
    pred, torch_pred = logits.argmax(1), torch_logits.argmax(1)
    agreement = float((pred == torch_pred).mean())
    max_diff = float(np.abs(logits - torch_logits).max())
    acc, torch_acc = float((pred == y.numpy()).mean()), float((torch_pred == y.numpy()).mean())
    log.info("%s %s: accuracy %.4f (torch %.4f), top-1 agreement %.4f, max |dlogit| %.3g",
             mspec.name, cell.label, acc, torch_acc, agreement, max_diff)  # fmt: skip
    check_parity(p["precision"], agreement, max_diff, float(np.abs(torch_logits).max()), torch_acc - acc)

    compression = "int8" if p["precision"] == "int8" else "none"
    row = row_factory(ctx, mspec, data)
    fields = {"format": p["format"], "runtime": "onnxruntime", "compression": compression}
    n = len(y)
    rows = [
        row(metric="clean_acc", value=acc, n=n, **fields),
        row(metric="parity_top1_agreement", value=agreement, n=n, **fields),
        row(metric="parity_max_abs_logit_diff", value=max_diff, n=n, **fields),
        row(metric="size_bytes", value=path.stat().st_size, **fields),
    ]
    lat = spec.latency
    if lat.enabled:
        stats = ort_model.latency(shape, lat.batch_sizes, lat.warmup, lat.min_repeats, lat.budget_s, ctx.seed)
        rows += latency_rows(row, stats, **fields)
    rows += _transfer_rows(ctx, mspec, cell, arrays, ort_model, y.numpy(), pred == y.numpy(), row, fields)
    return rows, {}


def _transfer_rows(ctx, mspec, cell, arrays, ort_model, y, clean_correct, row, fields) -> list:
    """``robust_acc`` of the deployed model on the adversarial examples crafted on its float source:
    one row per attack and eps; an image counts if the export classifies it right clean and attacked."""
    from robustbench_cnn.suite.cells import plan

    attacks = {c.label: dict(c.params) for c in plan(ctx.loaded.spec, mspec) if c.kind == "attack"}
    rows = []
    for label in cell.deps[1:]:
        adv = arrays[label].get("adv")
        if adv is None:
            continue
        p = attacks[label]
        pred = ort_model.predict(adv.numpy(), ctx.loaded.spec.eval_batch_size).argmax(1)
        robust = float((clean_correct & (pred == y)).mean())
        rows.append(row(metric="robust_acc", value=robust, attack=p["attack"], norm=p["norm"], eps=p["eps"],
                        n=len(y), **fields))  # fmt: skip
    return rows
