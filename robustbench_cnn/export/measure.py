"""The ``export`` cell: export one model (ONNX or TFLite, fp32 or int8), check parity with its torch
source, measure it on its runtime, and evaluate it on the adversarial examples crafted on the float
model (transfer robustness of the deployed artefact).

Parity thresholds (on the eval set, fail loudly with the numbers): fp32 exports agree with torch on
>= 99.5% of top-1 predictions with max |logit difference| <= 1e-3 x the largest |logit|; int8
exports agree on >= 97% and lose <= 2 points of accuracy.
"""

from __future__ import annotations

import logging
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.export.onnx import export_onnx, quantize_int8
from robustbench_cnn.runtime.onnx_runtime import OrtModel
from robustbench_cnn.runtime.tflite_runtime import TfliteModel

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


def _export(ctx, mspec, model, data, p: dict) -> Path:
    """The exported file for this cell (fp32 exports are shared by the int8 cells that quantize them)."""
    out_dir = ctx.run_dir / "exports"
    shape = tuple(data.x_eval.shape[1:])
    gen = torch.Generator().manual_seed(ctx.seed)
    idx = torch.randperm(len(data.y_train), generator=gen)[: p["calibration_size"]]
    calibration = data.x_train[idx]
    int8 = p["precision"] == "int8"
    if p["format"] == "tflite":
        from robustbench_cnn.export.tflite import export_tflite

        path = out_dir / f"{mspec.name}{'.int8' if int8 else ''}.tflite"
        write = partial(export_tflite, model, shape, precision=p["precision"], calibration=calibration,
                        per_channel=p["per_channel"])  # fmt: skip
        return _atomic_export(ctx, path, write)
    write = partial(export_onnx, model, shape, opset=p["opset"])
    fp32_path = _atomic_export(ctx, out_dir / f"{mspec.name}.onnx", write)
    if not int8:
        return fp32_path
    return quantize_int8(fp32_path, out_dir / f"{mspec.name}.int8.onnx", calibration.numpy(), p["per_channel"])


def _atomic_export(ctx, path: Path, write) -> Path:
    """``write(tmp_path)`` into a temporary folder, then move the file in place (reused if present)."""
    if not path.is_file():
        with tempfile.TemporaryDirectory(dir=ctx.run_dir) as tmp:
            written = write(Path(tmp) / path.name)
            path.parent.mkdir(exist_ok=True)
            written.replace(path)
    return path


def export_cell(ctx, mspec, model, data, cell, arrays, surrogate):
    """Rows for the exported model: clean accuracy, parity, size, latency (format/runtime columns set)."""
    from robustbench_cnn.suite.measure import latency_rows, predict_logits, row_factory

    p = dict(cell.params)
    spec = ctx.loaded.spec
    path = _export(ctx, mspec, model, data, p)
    if p["format"] == "tflite":
        deployed, runtime = TfliteModel(path), "tflite"
    else:
        deployed, runtime = OrtModel(path, ctx.device.type), "onnxruntime"

    x, y = data.x_eval, data.y_eval
    torch_logits = predict_logits(model, x, spec.eval_batch_size, ctx.device).numpy()
    logits = deployed.predict(x.numpy(), spec.eval_batch_size)
    pred, torch_pred = logits.argmax(1), torch_logits.argmax(1)
    agreement = float((pred == torch_pred).mean())
    max_diff = float(np.abs(logits - torch_logits).max())
    acc, torch_acc = float((pred == y.numpy()).mean()), float((torch_pred == y.numpy()).mean())
    log.info("%s %s: accuracy %.4f (torch %.4f), top-1 agreement %.4f, max |dlogit| %.3g",
             mspec.name, cell.label, acc, torch_acc, agreement, max_diff)  # fmt: skip
    check_parity(p["precision"], agreement, max_diff, float(np.abs(torch_logits).max()), torch_acc - acc)

    compression = mspec.compression
    if p["precision"] == "int8":
        compression = "int8" if compression == "none" else f"{compression}+int8"
    row = row_factory(ctx, mspec, data)
    fields = {"format": p["format"], "runtime": runtime, "compression": compression}
    n = len(y)
    rows = [
        row(metric="clean_acc", value=acc, n=n, **fields),
        row(metric="parity_top1_agreement", value=agreement, n=n, **fields),
        row(metric="parity_max_abs_logit_diff", value=max_diff, n=n, **fields),
        row(metric="size_bytes", value=path.stat().st_size, **fields),
    ]
    lat = spec.latency
    if lat.enabled:
        args = (lat.warmup, lat.min_repeats, lat.budget_s, ctx.seed)
        if runtime == "tflite":  # batch-1 models: the edge case
            stats = [deployed.latency(*args)]
        else:
            stats = deployed.latency(tuple(x.shape[1:]), lat.batch_sizes, *args)
        from robustbench_cnn.runtime.samples import samples_dir

        rows += latency_rows(row, stats, samples_dir(ctx.run_dir), **fields)
    rows += _transfer_rows(ctx, mspec, cell, arrays, deployed, y.numpy(), pred == y.numpy(), row, fields)
    return rows, {}


def _transfer_rows(ctx, mspec, cell, arrays, deployed, y, clean_correct, row, fields) -> list:
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
        pred = deployed.predict(adv.numpy(), ctx.loaded.spec.eval_batch_size).argmax(1)
        robust = float((clean_correct & (pred == y)).mean())
        rows.append(row(metric="robust_acc", value=robust, attack=p["attack"], norm=p["norm"], eps=p["eps"],
                        n=len(y), **fields))  # fmt: skip
    return rows
