"""A deployed artifact: an edge build that exists only as a ``.tflite`` file (made by somebody else's
toolchain, e.g. the MLPerf Tiny ResNet-8), measured on its own runtime with its own input contract.

Tensor contract: :meth:`DeployedArtifact.predict` takes float32 images ``(N, C, H, W)`` in [0, 1], as
every model of this project does, and returns float32 logits ``(N, K)``. It turns them into what the
file declares: NHWC where the input's last dimension holds the channels, scaled to 0..255 for
``input_range = "0..255"``, quantized with the input tensor's own (scale, zero point); outputs are
dequantized with the output tensor's. A quantized input without a scale is refused.

Measured (:func:`measure_artifact`): clean accuracy and macro F1 on the eval images, batch-1 latency,
size, and the direct Square Attack (Andriushchenko et al. 2020) on the runtime itself at each Linf eps
(attack column ``square_direct``): black-box robustness is the only kind an artifact without weights
can be asked about.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from robustbench_cnn.errors import InputError
from robustbench_cnn.runtime.tflite_runtime import TfliteModel

BYTE = 255.0


class DeployedArtifact:
    """A ``.tflite`` edge build behind the project's [0, 1] NCHW contract (see the module docstring)."""

    def __init__(self, path: Path, input_range: str = "0..1", threads: int | None = None) -> None:
        try:
            self.model = TfliteModel(path, threads)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: not a TFLite model the LiteRT interpreter can load ({exc})") from None
        self.path, self.scale = Path(path), BYTE if input_range == "0..255" else 1.0
        detail = self.model.input
        if np.issubdtype(detail["dtype"], np.integer) and detail["quantization"][0] == 0:
            raise InputError(f"{path}: its {np.dtype(detail['dtype']).name} input has no quantization scale/zero "
                             "point; re-convert it with full-integer quantization parameters")  # fmt: skip
        shape = self.model.sample_shape
        if len(shape) != 3:
            raise InputError(f"{path}: input shape {tuple(detail['shape'])} is not an image batch (N, H, W, C)")
        self.nhwc = shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4)
        self.image_shape = (shape[-1], shape[0], shape[1]) if self.nhwc else shape  # (C, H, W)
        self.runtime = self.model.runtime

    @property
    def quantized(self) -> bool:
        return bool(np.issubdtype(self.model.input["dtype"], np.integer))

    def predict(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        if tuple(images.shape[1:]) != tuple(self.image_shape):
            raise InputError(f"{self.path}: takes {self.image_shape} images (C, H, W); the data has "
                             f"{tuple(images.shape[1:])}")  # fmt: skip
        x = images.transpose(0, 2, 3, 1) if self.nhwc else images
        return self.model.predict(np.ascontiguousarray(x, dtype=np.float32) * np.float32(self.scale))

    def latency(self, warmup: int, min_repeats: int, budget_s: float, seed: int = 0):
        return self.model.latency(warmup, min_repeats, budget_s, seed)


def measure_artifact(
    artifact: DeployedArtifact,
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
    import torch

    from robustbench_cnn.export.blackbox import DIRECT_ATTACK, direct_robust
    from robustbench_cnn.measures.latency import latency_rows
    from robustbench_cnn.metrics import macro_f1

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
