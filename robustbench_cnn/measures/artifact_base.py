"""The base of a deployed artifact: an edge build that exists only as a file (``.tflite``, ``.onnx``),
put behind the project's input contract. The variants (:class:`~robustbench_cnn.measures.artifact.TfliteArtifact`,
:class:`~robustbench_cnn.measures.artifact_onnx.OnnxArtifact`) open the file on its runtime and say
whether it is quantized; everything else is here.

Tensor contract: :meth:`Artifact.predict` takes float32 images ``(N, C, H, W)`` in [0, 1], as every
model of this project does, and returns float32 logits ``(N, K)``. The images go to the file as the
torch-free validator sends them (:func:`robustbench_cnn.edge.models.file_input`): transposed to NHWC
where the file's input holds the channels last, times 255 for ``input_range = "0..255"``; the runtime
then quantizes (TFLite: the input tensor's scale and zero point) or casts (ONNX: the graph's dtype).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustbench_cnn.edge.models import OnnxFile, file_input
from robustbench_cnn.errors import InputError
from robustbench_cnn.runtime.tflite_runtime import TfliteModel
from robustbench_cnn.runtime.timing import LatencyStats

BYTE = 255.0
RANGES = ("0..1", "0..255")


def channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a per-image input shape of three dimensions is ``(H, W, C)`` (else ``(C, H, W)``): the
    last dimension holds 1, 3 or 4 channels and the first does not."""
    return shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4)


class Artifact:
    """An edge build on its own runtime behind the [0, 1] NCHW contract (see the module docstring).

    ``image_shape``: the ``(C, H, W)`` the file takes; ``layout``: ``NHWC`` or ``NCHW``; ``precision``:
    ``int8`` or ``fp32`` as read from the file; ``format`` and ``runtime``: the rows' columns."""

    format = ""

    def __init__(self, path: Path, model: TfliteModel | OnnxFile, input_range: str) -> None:
        if input_range not in RANGES:
            raise InputError(f"{path}: --input-range {input_range!r}; give 0..1 or 0..255")
        self.path, self.model, self.input_range = Path(path), model, input_range
        self.scale = BYTE if input_range == "0..255" else 1.0
        shape = tuple(model.sample_shape)
        self.nhwc = channels_last(shape)
        self.image_shape = (shape[-1], shape[0], shape[1]) if self.nhwc else shape  # (C, H, W)
        self.runtime = model.runtime

    @property
    def quantized(self) -> bool:
        raise NotImplementedError

    @property
    def precision(self) -> str:
        return "int8" if self.quantized else "fp32"

    @property
    def layout(self) -> str:
        return "NHWC" if self.nhwc else "NCHW"

    def predict(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits ``(N, K)`` float32 of images ``(N, C, H, W)`` float32 in [0, 1]."""
        if tuple(images.shape[1:]) != tuple(self.image_shape):
            raise InputError(f"{self.path}: takes {self.image_shape} images (C, H, W); the data has "
                             f"{tuple(images.shape[1:])}")  # fmt: skip
        return self.model.predict(file_input(images, self.nhwc, self.scale))

    def latency(self, warmup: int, min_repeats: int, budget_s: float, seed: int = 0) -> LatencyStats:
        """Latency of one invocation at the file's batch (1 where the batch is dynamic)."""
        return self.model.latency(warmup, min_repeats, budget_s, seed)
