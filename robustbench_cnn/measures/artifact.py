"""A deployed artifact: an edge build that exists only as a file (made by somebody else's toolchain,
e.g. the MLPerf Tiny ResNet-8 ``.tflite``, or an ``.onnx``), measured on its own runtime with its own
input contract.

:func:`open_artifact` picks the variant by the file's suffix: :class:`TfliteArtifact` (LiteRT; here)
or :class:`~robustbench_cnn.measures.artifact_onnx.OnnxArtifact` (ONNX Runtime). Both share
:class:`~robustbench_cnn.measures.artifact_base.Artifact`.

Tensor contract: ``predict`` takes float32 images ``(N, C, H, W)`` in [0, 1], as every model of this
project does, and returns float32 logits ``(N, K)``. A ``.tflite`` gets them in what the file declares:
NHWC where the input's last dimension holds the channels, scaled to 0..255 for ``input_range =
"0..255"``, quantized with the input tensor's own (scale, zero point); outputs are dequantized with the
output tensor's. A quantized input without a scale is refused.

Measured (:func:`measure_artifact`): clean accuracy and macro F1 on the eval images, batch-1 latency,
size, and the direct Square Attack (Andriushchenko et al. 2020) on the runtime itself at each Linf eps
(attack column ``square_direct``): black-box robustness is the only kind an artifact without weights
can be asked about.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from robustbench_cnn.errors import InputError
from robustbench_cnn.export.blackbox import DIRECT_ATTACK, direct_robust
from robustbench_cnn.measures.artifact_base import Artifact
from robustbench_cnn.measures.artifact_onnx import OnnxArtifact
from robustbench_cnn.measures.latency import latency_rows
from robustbench_cnn.metrics import macro_f1
from robustbench_cnn.runtime.tflite_runtime import TfliteModel


class TfliteArtifact(Artifact):
    """A ``.tflite`` edge build on LiteRT behind the [0, 1] NCHW contract (see the module docstring)."""

    format = "tflite"

    def __init__(self, path: Path, input_range: str = "0..1", threads: int | None = None) -> None:
        try:
            model = TfliteModel(path, threads)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: not a TFLite model the LiteRT interpreter can load ({exc})") from None
        detail = model.input
        if np.issubdtype(detail["dtype"], np.integer) and detail["quantization"][0] == 0:
            raise InputError(f"{path}: its {np.dtype(detail['dtype']).name} input has no quantization scale/zero "
                             "point; re-convert it with full-integer quantization parameters")  # fmt: skip
        if len(model.sample_shape) != 3:
            raise InputError(f"{path}: input shape {tuple(detail['shape'])} is not an image batch (N, H, W, C)")
        super().__init__(path, model, input_range)

    @property
    def quantized(self) -> bool:
        return bool(np.issubdtype(self.model.input["dtype"], np.integer))  # type: ignore[union-attr]


ARTIFACTS: dict[str, type[TfliteArtifact] | type[OnnxArtifact]] = {".tflite": TfliteArtifact, ".onnx": OnnxArtifact}


def open_artifact(path: Path, input_range: str = "0..1", threads: int | None = None) -> Artifact:
    """The artifact variant for ``path``'s suffix (``.tflite`` or ``.onnx``); one line for anything else."""
    kind = ARTIFACTS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: --artifact: a '{path.suffix or 'suffix-less'}' file is no edge build this "
                         f"command runs; give a {' or '.join(ARTIFACTS)} file")  # fmt: skip
    if not path.is_file():
        raise InputError(f"{path}: --artifact: no such file; give the path of the {path.suffix} file")
    return kind(path, input_range, threads)


def measure_artifact(
    artifact: Artifact,
    x: np.ndarray,
    y: np.ndarray,
    row: Callable[..., object],
    *,
    eps: tuple[float, ...] = (),
    queries: int = 100,
    attack_size: int | None = None,
    latency: tuple[int, int, float] | None = (5, 20, 1.0),
    seed: int = 0,
    num_classes: int = 10,
    pred: np.ndarray | None = None,
) -> list:
    """Rows (``row(metric=..., value=..., ...)``) of one artifact on images ``x`` ``(N, C, H, W)`` in
    [0, 1] with labels ``y``: clean_acc, macro_f1, size_bytes, latency at batch 1 (``latency`` =
    (warm-up, min repeats, budget s); None: off) and ``square_direct`` robust_acc per eps on the first
    ``attack_size`` images. ``pred``: the artifact's top-1 predictions on ``x``, where the caller has them."""
    pred = artifact.predict(x).argmax(1) if pred is None else pred
    correct = pred == y
    n = len(y)
    rows = [row(metric="clean_acc", value=float(correct.mean()), n=n),
            row(metric="macro_f1", value=macro_f1(torch.from_numpy(pred), torch.from_numpy(y), num_classes), n=n),
            row(metric="size_bytes", value=float(artifact.path.stat().st_size))]  # fmt: skip
    if latency is not None:
        rows += latency_rows(row, [artifact.latency(*latency, seed=seed)])  # type: ignore[arg-type]
    k = min(attack_size or n, n)
    for e in eps:
        robust = direct_robust(artifact, x[:k], y[:k], correct[:k], e, queries, seed, batch_size=256)
        rows.append(row(metric="robust_acc", value=float(robust.mean()), attack=DIRECT_ATTACK, norm="linf", eps=e,
                        n=k))  # fmt: skip
    return rows
