"""The ``export`` cell: export one model (ONNX, TFLite, ExecuTorch or an AOTInductor GPU build; fp32,
fp16, bf16 or int8), check parity with its torch source, measure it on its runtime, and evaluate it on the
adversarial examples crafted on the float model (transfer robustness of the deployed artefact), under
Square Attack on its own runtime, and per image over both (its ``worst_case`` row at each budget).

Parity (on the eval set): top-1 agreement with torch >= ``min_agreement`` (default 0.995 for fp32,
0.99 for fp16/bf16, 0.97 for int8), clean accuracy lost <= ``max_accuracy_loss`` (0.02 for int8,
0.01 otherwise), and for fp32 max |logit difference| <= 1e-3 x the largest |logit|. An export that
misses them still gets every row (the int8 question is answered either way), plus ``check_parity``
= 0, which the summary shows as a warning and ``edge bundle`` uses to leave it out. A GPU target on
a machine without a GPU writes one ``export_skipped`` row and measures nothing else.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.config.spec_measure import ExportSpec
from robustbench_cnn.engine.cells import Cell, CellResult, ExportParams, Inputs, Shard
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.kinds import cell_kind, register_measure
from robustbench_cnn.export.blackbox import DIRECT_ATTACK, direct_robust
from robustbench_cnn.export.executorch import export_executorch
from robustbench_cnn.export.gpu import AotiModel, TargetUnavailable, aoti_build, onnx_fp16, require_cuda
from robustbench_cnn.export.onnx import export_onnx, quantize_int8
from robustbench_cnn.export.tflite import export_tflite
from robustbench_cnn.measures.common import predict_logits
from robustbench_cnn.measures.latency import latency_rows
from robustbench_cnn.runtime.executorch_runtime import ExecutorchModel
from robustbench_cnn.runtime.onnx_runtime import OrtModel
from robustbench_cnn.runtime.samples import samples_dir
from robustbench_cnn.runtime.tflite_runtime import TfliteModel

log = logging.getLogger(__name__)

FP32_REL_DIFF = 1e-3
DEFAULT_AGREEMENT = {"fp32": 0.995, "fp16": 0.99, "bf16": 0.99, "int8": 0.97}
DEFAULT_MAX_LOSS = {"int8": 0.02}


@register_measure("export", order=70)
def plan_exports(spec: SuiteSpec, mspec: ModelSpec, planned: Sequence[Cell]) -> list[Cell]:
    """One cell per export target of the model; its inputs: the clean cell and every attack cell (their
    adversarial images test the deployed artefact)."""
    m = mspec.name
    direct = tuple(sorted({float(e) for ev in spec.evaluations if ev.norm == "linf" and ev.applies_to(m)
                           for e in ev.eps if e > 0}))  # fmt: skip
    inputs = tuple((c.kind, c.label) for c in planned if c.kind in ("clean", "attack"))
    return [Cell(m, "export", ExportParams(ex, spec.latency, direct), inputs)
            for ex in spec.exports if ex.models is None or m in ex.models]  # fmt: skip


def parity_problems(p: ExportSpec, agreement: float, max_diff: float, scale: float, acc_loss: float) -> list[str]:
    """What an export misses of its parity thresholds (``p``: the export's settings); empty: it passes."""
    precision = p.precision
    need = p.min_agreement or DEFAULT_AGREEMENT[precision]
    max_loss = p.max_accuracy_loss or DEFAULT_MAX_LOSS.get(precision, 0.01)
    problems = []
    if agreement < need:
        problems.append(f"top-1 agreement {agreement:.4f} (>= {need} needed)")
    if acc_loss > max_loss:
        problems.append(f"accuracy loss {acc_loss * 100:.2f} pt (<= {max_loss * 100:g} needed)")
    if precision == "fp32" and max_diff > FP32_REL_DIFF * scale:
        problems.append(f"max |dlogit| {max_diff:.3g} (<= {FP32_REL_DIFF * scale:.3g} needed)")
    return problems


def _export(ctx: RunContext, mspec, model, p) -> Path:
    """The exported file for this cell (fp32 ONNX files are shared by the int8/fp16 cells that convert them)."""
    out_dir, data = ctx.run_dir / "exports", ctx.data
    shape = tuple(data.x_eval.shape[1:])
    gen = torch.Generator().manual_seed(ctx.seed)
    idx = torch.randperm(len(data.y_train), generator=gen)[: p.calibration_size]
    calibration = data.x_train[idx]
    precision = p.precision
    suffix = "" if precision == "fp32" else f".{precision}"
    if p.format == "aoti":
        require_cuda(ctx.device, f"aoti {precision}")
        write = partial(aoti_build, model, shape, precision, device=ctx.device)
        return _atomic_export(ctx, out_dir / f"{mspec.name}{suffix}.pt2", write)
    if p.format == "tflite":
        path = out_dir / f"{mspec.name}{suffix}.tflite"
        write = partial(export_tflite, model, shape, precision=precision, calibration=calibration,
                        per_channel=p.per_channel)  # fmt: skip
        return _atomic_export(ctx, path, write)
    if p.format == "executorch":
        require_executorch()
        write = partial(export_executorch, model, shape, precision=precision, calibration=calibration,
                        per_channel=p.per_channel)  # fmt: skip
        return _atomic_export(ctx, out_dir / f"{mspec.name}{suffix}.pte", write)

    if precision == "fp16":
        require_cuda(ctx.device, "onnx fp16")
    write = partial(export_onnx, model, shape, opset=p.opset)
    fp32_path = _atomic_export(ctx, out_dir / f"{mspec.name}.onnx", write)
    if precision == "fp16":
        return _atomic_export(ctx, out_dir / f"{mspec.name}.fp16.onnx", partial(onnx_fp16, fp32_path))
    if precision == "int8":
        quantize = partial(_quantize, fp32_path, calibration.numpy(), p.per_channel)
        return _atomic_export(ctx, out_dir / f"{mspec.name}.int8.onnx", quantize)
    return fp32_path


def require_executorch() -> None:
    """Raise :class:`TargetUnavailable` (the cell writes ``export_skipped``) where ExecuTorch is not
    installed: it is an optional extra, as a GPU target is optional hardware."""
    if importlib.util.find_spec("executorch") is None:
        raise TargetUnavailable("ExecuTorch is not installed: pip install 'robustbench-cnn[executorch]'")


def _quantize(fp32_path: Path, calibration: np.ndarray, per_channel: bool, out_path: Path) -> Path:

    return quantize_int8(fp32_path, out_path, calibration, per_channel)


def _atomic_export(ctx: RunContext, path: Path, write) -> Path:
    """``write(tmp_path)`` into a temporary folder of the run directory (with whatever side files the
    writer makes, e.g. the quantizer's pre-processed model), then move the file in place (reused if
    present: every export is a function of the run's model, seed and settings)."""
    if not path.is_file():
        with tempfile.TemporaryDirectory(dir=ctx.run_dir) as tmp:
            written = write(Path(tmp) / path.name)
            path.parent.mkdir(exist_ok=True)
            written.replace(path)
    return path


def _deployed(ctx: RunContext, p, path: Path):
    """(runtime model, runtime name, device it runs on) for an exported file."""
    if p.format == "tflite":  # LiteRT runs on the CPU
        return TfliteModel(path), "tflite", "cpu"
    if p.format == "aoti":
        return AotiModel(path, ctx.device), "torch_aoti", "cuda"
    if p.format == "executorch":  # XNNPACK on the CPU
        return ExecutorchModel(path), "executorch", "cpu"

    deployed = OrtModel(path, str(ctx.device), threads=torch.get_num_threads(), tensorrt=p.tensorrt)
    if p.precision == "fp16" and deployed.device != "cuda":
        raise TargetUnavailable("onnx fp16 is a GPU target and ONNX Runtime has no CUDA provider here "
                                "(pip install onnxruntime-gpu)")  # fmt: skip
    runtime = "onnxruntime_trt" if deployed.provider == "TensorrtExecutionProvider" else "onnxruntime"
    return deployed, runtime, deployed.device  # the provider ONNX Runtime actually chose


def deployed_export(ctx: RunContext, target: ModelUnderTest, p: ExportSpec) -> tuple[Any, dict[str, str]]:
    """Export ``p`` of ``target`` as its runtime runs it (``predict(x, batch_size)``), and the row fields
    that name it (format, compression, runtime, device). The file is the export cell's, made again if
    absent (an export is a function of the model, the seed and its settings); a GPU target on a machine
    without one raises :class:`TargetUnavailable`."""
    fields = {"format": p.format, "compression": _compression(target.spec, p.precision)}
    deployed, runtime, device = _deployed(ctx, p, _export(ctx, target.spec, target.model, p))
    return deployed, {**fields, "runtime": runtime, "device": device}


def _compression(mspec, precision: str) -> str:
    if precision == "fp32":
        return mspec.compression
    return precision if mspec.compression == "none" else f"{mspec.compression}+{precision}"


@cell_kind("export", ExportParams, resources="cpu")
def export_cell(ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None) -> CellResult:
    """Rows for the exported model: clean accuracy, parity (``check_parity`` 1/0), size, latency and
    transfer robustness, with the format/runtime/compression/device columns set."""

    params: ExportParams = cell.params
    p, spec, mspec = params.settings, ctx.spec, target.spec
    row = ctx.row(mspec)
    fields = {"format": p.format, "compression": _compression(mspec, p.precision)}
    try:
        path = _export(ctx, mspec, target.model, p)
        deployed, runtime, device = _deployed(ctx, p, path)
    except TargetUnavailable as exc:
        log.warning("%s %s skipped: %s", mspec.name, cell.label, exc)
        meta = {"skipped_exports": {cell.label: str(exc)}}
        return CellResult([row(metric="export_skipped", value=1.0, runtime="none", **fields)], {}, meta)
    fields.update(runtime=runtime, device=device)

    x, y = ctx.data.x_eval, ctx.data.y_eval
    torch_logits = predict_logits(target.model, x, spec.eval_batch_size, ctx.device).numpy()
    logits = deployed.predict(x.numpy(), spec.eval_batch_size)
    pred, torch_pred = logits.argmax(1), torch_logits.argmax(1)
    agreement = float((pred == torch_pred).mean())
    max_diff = float(np.abs(logits - torch_logits).max())
    acc, torch_acc = float((pred == y.numpy()).mean()), float((torch_pred == y.numpy()).mean())
    log.info("%s %s: accuracy %.4f (torch %.4f), top-1 agreement %.4f, max |dlogit| %.3g",
             mspec.name, cell.label, acc, torch_acc, agreement, max_diff)  # fmt: skip
    problems = parity_problems(p, agreement, max_diff, float(np.abs(torch_logits).max()), torch_acc - acc)
    meta = {}
    if problems:
        log.warning("%s %s: parity failed: %s", mspec.name, cell.label, "; ".join(problems))
        meta["parity_failed"] = {cell.label: "; ".join(problems)}
    n = len(y)
    rows = [
        row(metric="clean_acc", value=acc, n=n, **fields),
        row(metric="parity_top1_agreement", value=agreement, n=n, **fields),
        row(metric="parity_max_abs_logit_diff", value=max_diff, n=n, **fields),
        row(metric="check_parity", value=0.0 if problems else 1.0, n=n, **fields),
        row(metric="size_bytes", value=path.stat().st_size, **fields),
    ]
    rows += _latency_rows(ctx, params, deployed, runtime, row, fields)
    clean_correct = pred == y.numpy()
    masks: Masks = {}
    rows += _transfer_rows(ctx, inputs, deployed, y.numpy(), clean_correct, row, fields, masks)
    rows += _direct_rows(ctx, params, deployed, x.numpy(), y.numpy(), clean_correct, row, fields, masks)
    rows += _worst_rows(masks, row, fields)
    return CellResult(rows, {}, meta)


Masks = dict[tuple[str, float], list[np.ndarray]]  # (norm, eps) -> per-image robust masks of each attack


def _worst_rows(masks: Masks, row, fields) -> list:
    """The export's per-example worst case at each budget (``attack = worst_case``): an image counts
    only if the export classifies it right clean, under every transferred attack and under the direct
    Square on its own runtime; on the images every one of them saw (Square may run on fewer)."""
    rows = []
    for (norm, eps), found in masks.items():
        if eps <= 0 or len(found) < 2:
            continue
        n = min(len(m) for m in found)
        robust = np.logical_and.reduce([m[:n] for m in found])
        rows.append(row(metric="robust_acc", value=float(robust.mean()), attack="worst_case", norm=norm, eps=eps,
                        n=n, **fields))  # fmt: skip
    return rows


def _latency_rows(ctx: RunContext, params: ExportParams, deployed, runtime: str, row, fields) -> list:

    lat = params.latency
    if not lat.enabled:
        return []
    args = (lat.warmup, lat.min_repeats, lat.budget_s, ctx.seed)
    if runtime in ("tflite", "executorch"):  # batch-1 models: the edge case
        stats = [deployed.latency(*args)]
    else:
        stats = deployed.latency(tuple(ctx.data.x_eval.shape[1:]), lat.batch_sizes, *args)
    return latency_rows(row, stats, samples_dir(ctx.run_dir), **fields)


def _direct_rows(ctx: RunContext, params: ExportParams, deployed, x, y, clean_correct, row, fields,
                 masks: Masks) -> list:  # fmt: skip
    """``robust_acc`` of the export under Square Attack run on its own runtime, at each Linf eps the
    suite evaluates (attack column ``square_direct``); ``direct_queries = 0`` turns it off."""

    p = params.settings
    if p.direct_queries <= 0:
        return []
    n, rows = min(p.direct_size or len(y), len(y)), []
    for eps in params.direct_eps:
        robust = direct_robust(deployed, x[:n], y[:n], clean_correct[:n], eps, p.direct_queries, ctx.seed,
                               ctx.spec.eval_batch_size)  # fmt: skip
        rows.append(row(metric="robust_acc", value=float(robust.mean()), attack=DIRECT_ATTACK, norm="linf",
                        eps=eps, n=n, **fields))  # fmt: skip
        masks.setdefault(("linf", float(eps)), []).append(robust)
    return rows


def _transfer_rows(ctx: RunContext, inputs: Inputs, deployed, y, clean_correct, row, fields, masks: Masks) -> list:
    """``robust_acc`` of the deployed model on the adversarial examples crafted on its float source:
    one row per attack and eps; an image counts if the export classifies it right clean and attacked
    (its mask goes to ``masks``)."""
    rows = []
    for stored in inputs.many("attack"):
        adv = stored.arrays.get("adv")
        if adv is None:
            continue
        a = stored.cell.params
        pred = deployed.predict(adv.numpy(), ctx.spec.eval_batch_size).argmax(1)
        mask = clean_correct & (pred == y)
        masks.setdefault((a.norm, float(a.eps)), []).append(mask)
        rows.append(row(metric="robust_acc", value=float(mask.mean()), attack=a.attack, norm=a.norm, eps=a.eps,
                        n=len(y), **fields))  # fmt: skip
    return rows
