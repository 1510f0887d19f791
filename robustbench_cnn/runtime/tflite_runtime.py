"""TFLite inference with the LiteRT interpreter (``ai_edge_litert``; ``tflite_runtime`` as a fallback).

This module imports only the standard library, numpy and the interpreter, so the torch-free edge
validator uses it unchanged on a Raspberry Pi. XNNPACK (the default CPU delegate) runs the kernels
with ``threads`` threads. Quantized inputs and outputs are converted with the tensor's own (scale,
zero point), so callers always pass [0, 1] float images and get float logits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from robustbench_cnn.runtime.batches import in_fixed_batches
from robustbench_cnn.runtime.timing import LatencyStats, measure


def interpreter_class() -> tuple[type, str]:
    """The LiteRT ``Interpreter`` class and the name of the package that provided it."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        msg = "no TFLite runtime: pip install ai-edge-litert (or tflite-runtime on older OS images)"
        raise ImportError(msg) from None


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if detail["dtype"] == np.float32 or scale == 0:
        return x.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if detail["dtype"] == np.float32 or scale == 0:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


class TfliteModel:
    """A .tflite file behind a LiteRT interpreter; ``predict`` takes [0, 1] images ``(N, C, H, W)``."""

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        cls, self.runtime = interpreter_class()
        self.interpreter = cls(model_path=str(path), num_threads=threads or min(4, os.cpu_count() or 1))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = int(self.input["shape"][0])
        self.sample_shape = tuple(int(d) for d in self.input["shape"][1:])

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], _quantize(batch, self.input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)

    def predict(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits ``(N, K)`` as float32, ``self.batch`` images per invocation (the model's fixed batch)."""
        classes = int(self.output["shape"][-1])
        return in_fixed_batches(self._invoke, images, self.sample_shape, self.batch, classes)

    def latency(self, warmup: int = 5, min_repeats: int = 20, budget_s: float = 1.0, seed: int = 0) -> LatencyStats:
        """Latency of one invocation at the model's batch size (set_tensor + invoke + get_tensor)."""
        x = np.random.default_rng(seed).random((self.batch, *self.sample_shape), dtype=np.float32)
        return measure(lambda: self._invoke(x), self.batch, warmup, min_repeats, budget_s)
