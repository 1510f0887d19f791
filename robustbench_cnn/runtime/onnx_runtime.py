"""ONNX Runtime inference (CPU execution provider; CUDA's when available and asked for)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustbench_cnn.runtime.timing import LatencyStats, measure


class OrtModel:
    """An ONNX file behind an ``InferenceSession``; ``predict`` takes [0, 1] images ``(N, C, H, W)``."""

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.input = self.session.get_inputs()[0].name

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
            stats.append(
                measure(lambda x=x: self.session.run(None, {self.input: x}), bs, warmup, min_repeats, budget_s)
            )
        return stats
