"""ONNX Runtime inference on the execution provider that fits the run's device.

On a CUDA device the session asks for TensorRT's provider (when ``tensorrt=True`` and installed),
then CUDA's, then the CPU's; ``device`` says where the model actually runs (ONNX Runtime falls back
to the CPU silently, so the rows of a run must read it from the session, not assume it).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np

from robustbench_cnn.runtime.timing import LatencyStats, measure

log = logging.getLogger(__name__)

_PROVIDER_DEVICE = {"TensorrtExecutionProvider": "cuda", "CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}


def providers_for(device: str, tensorrt: bool = False) -> list[str | tuple[str, dict]]:
    """Execution providers to ask for on ``device`` (``cpu``, ``cuda`` or ``cuda:N``), best first,
    among those this ONNX Runtime build has."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    kind, _, index = device.partition(":")
    wanted: list[str | tuple[str, dict]] = []
    if kind == "cuda":
        options = {"device_id": int(index or 0)}
        if tensorrt and "TensorrtExecutionProvider" in available:
            wanted.append(("TensorrtExecutionProvider", options))
        if "CUDAExecutionProvider" in available:
            wanted.append(("CUDAExecutionProvider", options))
    return [*wanted, "CPUExecutionProvider"]


class OrtModel:
    """An ONNX file behind an ``InferenceSession``; ``predict`` takes [0, 1] images ``(N, C, H, W)``."""

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None, tensorrt: bool = False) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=providers_for(device, tensorrt))
        self.input = self.session.get_inputs()[0].name
        self.provider = self.session.get_providers()[0]
        if device.startswith("cuda") and self.device == "cpu":
            log.warning("%s: ONNX Runtime has no GPU execution provider here; measured on the CPU", path.name)

    @property
    def device(self) -> str:
        """``cuda`` or ``cpu``: where the session's first (preferred) provider runs the model."""
        return _PROVIDER_DEVICE.get(self.provider, "cpu")

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits ``(N, K)`` as float32."""
        outs = [self.session.run(None, {self.input: images[i : i + batch_size]})[0]
                for i in range(0, len(images), batch_size)]  # fmt: skip
        return np.concatenate(outs).astype(np.float32)

    def latency(self, sample_shape: tuple[int, ...], batch_sizes: tuple[int, ...], warmup: int, min_repeats: int,
                budget_s: float, seed: int = 0) -> list[LatencyStats]:  # fmt: skip
        rng = np.random.default_rng(seed)
        stats = []
        for bs in batch_sizes:
            x = rng.random((bs, *sample_shape), dtype=np.float32)
            stats.append(measure(partial(self.session.run, None, {self.input: x}), bs, warmup, min_repeats, budget_s))
        return stats
