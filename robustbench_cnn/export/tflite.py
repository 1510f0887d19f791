"""TFLite export with LiteRT-Torch (no TensorFlow): fp32, and full-integer int8 by PT2E quantization.

Input contract of every exported model: float32 ``(1, C, H, W)`` images in [0, 1] (normalization is
inside the graph, as in the torch model; batch 1, the edge case: LiteRT-Torch 0.10 cannot lower the
model's broadcasting with a symbolic batch). Output: logits ``(1, K)``, float32 for fp32 models and
int8 with a (scale, zero point) for int8 ones; ``runtime.tflite_runtime`` quantizes and dequantizes.

int8 is static post-training quantization (Jacob et al. 2018) through torchao's PT2E flow with
LiteRT-Torch's quantizer: int8 symmetric weights (per-tensor by default) and int8 activations
observed on calibration images from the training split, integer kernels end to end.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


def _quiet() -> None:
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its progress lines go to stdout


def _import():
    _quiet()
    try:
        import litert_torch
    except ImportError as exc:
        raise ImportError(
            f"TFLite export needs litert-torch ({exc}); install the 'edge' extra: pip install 'robustbench-cnn[edge]'"
        ) from None
    return litert_torch


def export_tflite(
    model: nn.Module,
    sample_shape: tuple[int, ...],
    path: Path,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
    per_channel: bool = False,
) -> Path:
    """Write ``model`` as a batch-1 .tflite file; returns ``path``. ``model`` is not modified.

    ``calibration``: float ``(N, C, H, W)`` in [0, 1], required for ``precision="int8"``.
    """
    litert_torch = _import()
    model = copy.deepcopy(model).eval().to("cpu").to(memory_format=torch.contiguous_format)
    sample = (torch.zeros((1, *sample_shape)),)
    if precision == "fp32":
        edge = litert_torch.convert(model, sample)
    elif precision == "int8":
        if calibration is None or len(calibration) == 0:
            raise ValueError("int8 TFLite export needs calibration images")
        graph, config = _quantized(model, sample, calibration, per_channel)
        edge = litert_torch.convert(graph, sample, quant_config=config)
    else:
        raise ValueError(f"unknown TFLite precision '{precision}' (fp32 or int8)")
    path.parent.mkdir(parents=True, exist_ok=True)
    edge.export(str(path))
    return path


def _quantized(model: nn.Module, sample: tuple[torch.Tensor], calibration: torch.Tensor, per_channel: bool):
    """The PT2E-quantized graph module and its ``QuantConfig``, ready for ``litert_torch.convert``."""
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    quantizer = pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=per_channel))
    graph = quantize_pt2e.prepare_pt2e(torch.export.export(model, sample).module(), quantizer)
    with torch.no_grad():
        for image in calibration.float().cpu().split(1):  # the exported graph has batch 1
            graph(image)
    graph = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(graph, fold_quantize=False))
    return graph, QuantConfig(pt2e_quantizer=quantizer)
