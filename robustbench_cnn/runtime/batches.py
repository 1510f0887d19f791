"""Running a model whose program has a fixed batch (a LiteRT interpreter, an ExecuTorch method) over
any number of images; numpy only, so the torch-free validator ships it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def in_fixed_batches(invoke: Callable[[np.ndarray], np.ndarray], images: np.ndarray, sample_shape: tuple[int, ...],
                     batch: int, classes: int = 0, what: str = "the model") -> np.ndarray:  # fmt: skip
    """Float32 logits ``(N, K)``: ``invoke`` on ``batch`` images at a time (float32, C-contiguous).
    ``classes``: K for an empty ``images``. ValueError for images of another shape, or a count that
    does not fill whole batches (``what`` names the model in the message)."""
    if tuple(images.shape[1:]) != tuple(sample_shape):
        raise ValueError(f"images of shape {tuple(images.shape[1:])}; {what} takes {tuple(sample_shape)}")
    if len(images) % batch:
        raise ValueError(f"{len(images)} images do not fill batches of {batch}")
    images = np.ascontiguousarray(images, dtype=np.float32)
    outs = [invoke(images[i : i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(outs).astype(np.float32, copy=False) if outs else np.zeros((0, classes), np.float32)
