"""GPU deployment targets: ONNX fp16 on ONNX Runtime's CUDA (or TensorRT) provider, and an
AOTInductor fp16/bf16 build run by torch on CUDA.

Both take the same input as every export (float32 ``(N, C, H, W)`` images in [0, 1]) and return
float32 logits ``(N, K)``; the reduced precision lives inside the artefact. Neither target falls
back to the CPU: where no GPU (or no GPU provider) is available, :class:`TargetUnavailable` says
why, and the export cell writes an ``export_skipped`` row instead of measuring something else.
"""

from __future__ import annotations

import copy
import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.runtime.timing import LatencyStats, measure

log = logging.getLogger(__name__)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TargetUnavailable(RobustBenchError):
    """This machine cannot run the requested GPU target (no CUDA device or provider)."""


def onnx_fp16(fp32_path: Path, out_path: Path) -> Path:
    """An fp16 copy of an fp32 ONNX file (weights and activations; float32 inputs and outputs kept)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path


def require_cuda(device: torch.device, what: str) -> None:
    if device.type != "cuda" or not torch.cuda.is_available():
        raise TargetUnavailable(f"{what} is a GPU target and this run is on {device}; run with --device cuda")


def aoti_build(model: nn.Module, sample_shape: tuple[int, ...], precision: str, path: Path, device) -> Path:
    """``model`` cast to ``precision`` on ``device``, exported with a dynamic batch and compiled ahead
    of time by AOTInductor into ``path`` (a ``.pt2`` package); ``model`` itself is not modified."""
    require_cuda(torch.device(device), f"aoti {precision}")
    net = _Float32Output(copy.deepcopy(model).eval().to(device, dtype=DTYPES[precision]), DTYPES[precision])
    sample = torch.rand((2, *sample_shape), device=device)
    program = torch.export.export(net, (sample,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(path)))


class _Float32Output(nn.Module):
    """Casts float32 images to the model's dtype and its logits back to float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


class AotiModel:
    """An AOTInductor package built by :func:`aoti_build` (this run's own file), run on CUDA."""

    def __init__(self, path: Path, device: torch.device) -> None:
        require_cuda(device, "aoti")
        self.runner, self.device = torch._inductor.aoti_load_package(str(path)), device

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        with torch.inference_mode():
            outs = [self.runner(torch.from_numpy(images[i : i + batch_size]).to(self.device)).cpu()
                    for i in range(0, len(images), batch_size)]  # fmt: skip
        return torch.cat(outs).numpy().astype(np.float32)

    def latency(self, sample_shape: tuple[int, ...], batch_sizes: tuple[int, ...], warmup: int, min_repeats: int,
                budget_s: float, seed: int = 0) -> list[LatencyStats]:  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        stats = []
        for bs in batch_sizes:
            x = torch.rand((bs, *sample_shape), generator=gen).to(self.device)
            with torch.inference_mode():
                stats.append(measure(partial(self.runner, x), bs, warmup, min_repeats, budget_s,
                                     sync=torch.cuda.synchronize))  # fmt: skip
        return stats
