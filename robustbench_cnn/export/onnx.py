"""ONNX export (torch.onnx dynamo exporter, dynamic batch) and int8 static quantization (ONNX Runtime).

Input contract of every exported graph: float32 ``(N, C, H, W)`` images in [0, 1] (normalization is
inside the graph, as in the torch model); output: logits ``(N, num_classes)``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

INPUT_NAME = "images"


def export_onnx(model: nn.Module, sample_shape: tuple[int, ...], path: Path, opset: int = 18) -> Path:
    """Write ``model`` as ONNX with a dynamic batch dimension; returns ``path``. ``model`` is not
    modified (a CPU copy in the standard layout is exported)."""
    model = copy.deepcopy(model).eval().to("cpu").to(memory_format=torch.contiguous_format)
    sample = torch.zeros((2, *sample_shape))
    program = torch.onnx.export(
        model,
        (sample,),
        input_names=[INPUT_NAME],
        output_names=["logits"],
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset,
        verbose=False,
    )
    if program is None:  # only the legacy (dynamo=False) exporter returns nothing
        raise RuntimeError("torch.onnx.export returned no program")
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    strip_source_locations(path)
    return path


def strip_source_locations(path: Path) -> None:
    """Drop the exporter's per-node Python stack traces (``pkg.torch.onnx.stack_trace``): they embed
    absolute source paths, so the same model exported from two checkouts gave different bytes."""
    import onnx

    proto = onnx.load(str(path))
    graphs = [proto.graph, *proto.functions]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            keep = [p for p in node.metadata_props if not p.key.endswith("stack_trace")]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
            graphs += [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]
    onnx.save_model(proto, str(path))


class _Calibration:
    """ONNX Runtime CalibrationDataReader over a float32 array, in batches."""

    def __init__(self, images: np.ndarray, batch: int = 32) -> None:
        self._batches = iter([{INPUT_NAME: images[i : i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self._batches, None)


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray, per_channel: bool = False) -> Path:
    """Full-integer int8 (QDQ, int8 weights and activations, MinMax) calibrated on ``calibration``.

    ``calibration``: float32 ``(N, C, H, W)`` in [0, 1], drawn from the training split. Per-tensor
    weight scales are the default: on the smoke suite's simple_cnn, ONNX Runtime 1.31's per-channel
    QDQ agreed with fp32 on 92.8% of top-1 predictions, per-tensor on 100%.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(calibration.astype(np.float32))
    pre = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre))
    quantize_static(str(pre), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)  # fmt: skip
    pre.unlink(missing_ok=True)
    return out_path
