"""The model files an edge bundle runs, behind one interface; torch-free (standard library, numpy and the
file's own runtime), shared by the validator and the host's ``edge bundle --artifact``.

- ``.tflite``: :class:`robustbench_cnn.runtime.tflite_runtime.TfliteModel` (LiteRT, else tflite-runtime);
  a quantized input or output is converted with the tensor's own (scale, zero point).
- ``.onnx``: :class:`OnnxFile`, ONNX Runtime's CPU provider through the project's
  :class:`robustbench_cnn.runtime.onnx_runtime.OrtModel`; the input's dtype is read from the graph.
- ``.pte``: :class:`robustbench_cnn.runtime.executorch_runtime.ExecutorchModel`, ExecuTorch's runtime,
  whose Python bindings load torch: it runs only where torch and executorch are installed, so a
  torch-free device skips ``.pte`` models (:func:`missing_runtime`) and validates the rest.

Tensor contract. :func:`file_input` turns the project's images, float32 ``(N, C, H, W)`` in [0, 1], into
what a file takes: float32 ``(N, H, W, C)`` for an NHWC file, multiplied by ``scale`` (255 for a file
that takes 0..255 pixels). Each model's ``predict`` takes that array (its ``sample_shape`` per image)
and returns float32 logits ``(N, K)``. An ONNX graph with a uint8 input gets the pixels rounded to
bytes (its range must be 0..255: a uint8 holds no [0, 1] pixel), a float16 one gets them cast; an ONNX
input of any other integer type is refused, since an ONNX graph records no scale or zero point for its
inputs (a quantized QDQ graph takes float input and quantizes inside).
"""

from __future__ import annotations

import importlib.util
import os
from functools import partial
from pathlib import Path

import numpy as np

from robustbench_cnn.runtime.executorch_runtime import ExecutorchModel
from robustbench_cnn.runtime.onnx_runtime import OrtModel
from robustbench_cnn.runtime.tflite_runtime import TfliteModel
from robustbench_cnn.runtime.timing import LatencyStats, measure

FORMATS = {".tflite": "TFLite", ".onnx": "ONNX", ".pte": "ExecuTorch"}  # suffix -> what a message calls the file
# suffix -> (one of these modules, and all of those, what to install). ExecuTorch's Python runtime links
# libtorch, which its wheel does not declare: both must be there.
RUNTIMES = {".tflite": (("ai_edge_litert", "tflite_runtime"), (), "pip install ai-edge-litert"),
            ".onnx": (("onnxruntime",), (), "pip install onnxruntime"),
            ".pte": (("executorch",), ("torch",), "pip install executorch torch")}  # fmt: skip
ONNX_INPUTS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}
ONNX_CHUNK = 256  # images per ONNX Runtime call when the batch dimension is dynamic


def file_input(images: np.ndarray, nhwc: bool, scale: float) -> np.ndarray:
    """Images ``(N, C, H, W)`` in [0, 1] as float32 in the file's layout (NHWC: ``(N, H, W, C)``) and
    range (times ``scale``)."""
    x = np.ascontiguousarray(images.transpose(0, 2, 3, 1) if nhwc else images, dtype=np.float32)
    return x * np.float32(scale) if scale != 1.0 else x


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


class OnnxFile:
    """An ``.onnx`` image classifier on ONNX Runtime's CPU provider: one input, float32/float16/uint8,
    ``(N, C, H, W)`` or ``(N, H, W, C)`` with fixed image dimensions; ``batch`` is the graph's fixed
    batch, or 1 where the batch is dynamic. Load errors are ``ValueError``, run errors ``RuntimeError``
    (ONNX Runtime's own exceptions derive from ``Exception`` only); no ONNX Runtime: ``ImportError``."""

    runtime = "onnxruntime"

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        try:
            self.ort = OrtModel(Path(path), "cpu", threads or min(4, os.cpu_count() or 1))
        except ImportError:
            raise ImportError("no ONNX runtime: pip install onnxruntime") from None
        except Exception as exc:  # noqa: BLE001 (InvalidProtobuf, Fail, ...: plain Exception subclasses)
            raise ValueError(_first_line(exc)) from None
        inputs = self.ort.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"the graph takes {len(inputs)} inputs; an image classifier takes one")
        if inputs[0].type not in ONNX_INPUTS:
            raise ValueError(f"its input is {inputs[0].type}, not float32, float16 or uint8 images (an ONNX "
                             "graph records no scale/zero point for an integer input)")  # fmt: skip
        self.dtype = np.dtype(ONNX_INPUTS[inputs[0].type])
        shape = list(inputs[0].shape)
        if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            raise ValueError(f"input shape {shape} is not an image batch with fixed (C, H, W) or (H, W, C)")
        fixed = isinstance(shape[0], int) and shape[0] > 0
        self.batch: int = int(shape[0]) if fixed else 1
        self.chunk: int = self.batch if fixed else ONNX_CHUNK
        self.sample_shape = tuple(int(d) for d in shape[1:])

    def feed(self, x: np.ndarray) -> np.ndarray:
        """``x`` (float32, the file's layout and range) in the input's dtype (uint8: rounded, clipped)."""
        if self.dtype == np.uint8:
            return np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def predict(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits ``(N, K)`` as float32 for ``images`` in the file's layout and range."""
        if tuple(images.shape[1:]) != self.sample_shape:
            raise ValueError(f"images of shape {tuple(images.shape[1:])}; the model takes {self.sample_shape}")
        if len(images) % self.batch:
            raise ValueError(f"{len(images)} images do not fill batches of {self.batch}")
        try:
            return self.ort.predict(self.feed(images), self.chunk)
        except Exception as exc:  # noqa: BLE001 (ONNX Runtime's errors: plain Exception subclasses)
            raise RuntimeError(_first_line(exc)) from None

    def latency(self, warmup: int = 5, min_repeats: int = 20, budget_s: float = 1.0, seed: int = 0) -> LatencyStats:
        """Latency of one ``session.run`` on ``batch`` random images in the input's dtype."""
        x = np.random.default_rng(seed).random((self.batch, *self.sample_shape), dtype=np.float32)
        feed = {self.ort.input: self.feed(x * 255 if self.dtype == np.uint8 else x)}
        return measure(partial(self.ort.session.run, None, feed), self.batch, warmup, min_repeats, budget_s)


def missing_runtime(suffix: str) -> str | None:
    """What to install to run a ``suffix`` file here, or None where its runtime is installed (looked up
    without importing it: finding ExecuTorch must not load torch)."""
    any_of, all_of, install = RUNTIMES[suffix]
    found = any(importlib.util.find_spec(m) is not None for m in any_of)
    return None if found and all(importlib.util.find_spec(m) is not None for m in all_of) else install


def open_model(path: Path, threads: int | None = None) -> TfliteModel | OnnxFile | ExecutorchModel:
    """The runtime for ``path`` by its suffix (``.tflite``, ``.onnx`` or ``.pte``); ValueError for another."""
    if path.suffix == ".onnx":
        return OnnxFile(path, threads)
    if path.suffix == ".pte":
        return ExecutorchModel(path, threads)
    if path.suffix == ".tflite":
        return TfliteModel(path, threads)
    raise ValueError(f"a '{path.suffix}' file, not one of {', '.join(FORMATS)}")
