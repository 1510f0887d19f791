"""ExecuTorch export (``.pte``), lowered to the XNNPACK delegate: fp32, and int8 by PT2E quantization
with ExecuTorch's XNNPACK quantizer.

Input contract of every exported program: float32 ``(1, C, H, W)`` images in [0, 1] (normalization is
inside the graph, as in the torch model; batch 1, the edge case: ExecuTorch plans its memory ahead of
time, and a program exported with a symbolic batch refused larger batches at run time in ExecuTorch
1.5.1). Output: logits ``(1, K)`` float32, also for int8 programs (their quantize/dequantize nodes are
inside the graph, so callers always pass float images).

int8 is static post-training quantization (Jacob et al. 2018) through torchao's PT2E flow
(``prepare_pt2e`` / ``convert_pt2e``) with ``XNNPACKQuantizer``: symmetric int8 weights (per channel
by default, as XNNPACK's own examples quantize), int8 activations observed on calibration images from
the training split; the quantized pattern is lowered to XNNPACK's integer kernels.

ExecuTorch is optional (``pip install 'robustbench-cnn[executorch]'``); its Python runtime links
libtorch (``runtime.executorch_runtime``), so a ``.pte`` is validated where torch is installed.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

INSTALL = "install the 'executorch' extra: pip install 'robustbench-cnn[executorch]'"


def _lower(program: torch.export.ExportedProgram) -> bytes:
    """The ``.pte`` bytes of an exported program, with every supported subgraph on XNNPACK."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError as exc:
        raise ImportError(f"ExecuTorch export needs executorch ({exc}); {INSTALL}") from None
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return bytes(edge.to_executorch().buffer)


def export_executorch(
    model: nn.Module,
    sample_shape: tuple[int, ...],
    path: Path,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
    per_channel: bool = True,
) -> Path:
    """Write ``model`` as a batch-1 ExecuTorch program on XNNPACK; returns ``path``. ``model`` is not
    modified. ``calibration``: float ``(N, C, H, W)`` in [0, 1], required for ``precision="int8"``."""
    model = copy.deepcopy(model).eval().to("cpu").to(memory_format=torch.contiguous_format)
    sample = (torch.zeros((1, *sample_shape)),)
    if precision == "int8":
        if calibration is None or len(calibration) == 0:
            raise ValueError("int8 ExecuTorch export needs calibration images")
        model = _quantized(model, sample, calibration, per_channel)
    elif precision != "fp32":
        raise ValueError(f"unknown ExecuTorch precision '{precision}' (fp32 or int8)")
    with torch.no_grad():
        data = _lower(torch.export.export(model, sample))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _quantized(model: nn.Module, sample: tuple[torch.Tensor], calibration: torch.Tensor, per_channel: bool):
    """The PT2E-quantized graph module (quantize/dequantize pairs around XNNPACK's int8 patterns)."""
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as exc:
        raise ImportError(f"ExecuTorch int8 export needs executorch and torchao ({exc}); {INSTALL}") from None
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
    graph = prepare_pt2e(torch.export.export(model, sample).module(), quantizer)
    with torch.no_grad():
        for image in calibration.float().cpu().split(1):  # the exported graph has batch 1
            graph(image)
    return move_exported_model_to_eval(convert_pt2e(graph))
