"""The in-memory dataset contract shared by every loader, and the spec-driven entry point."""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from robustbench_cnn.data.catalog import DATASETS
from robustbench_cnn.errors import RobustBenchError

if TYPE_CHECKING:
    from robustbench_cnn.config.spec import DatasetSpec


class DatasetError(RobustBenchError):
    """A dataset's files are missing or malformed (exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class ImageDataset:
    """A train/eval split held in memory.

    ``x_*``: float32 ``(N, C, H, W)`` in [0, 1]; ``y_*``: int64 ``(N,)`` in ``[0, num_classes)``.
    ``mean``/``std`` are per-channel statistics of the training images, used by the model's
    built-in normalization layer.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    num_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def _train_images(self) -> torch.Tensor:
        if len(self.x_train) < 2:
            raise DatasetError(f"dataset '{self.name}' has no training split, so it has no statistics to normalize "
                               "with and nothing to train on; declare the model's preprocess, or add the training "
                               "files")  # fmt: skip
        return self.x_train

    @cached_property
    def mean(self) -> tuple[float, ...]:
        return tuple(float(m) for m in self._train_images().mean(dim=(0, 2, 3)))

    @cached_property
    def std(self) -> tuple[float, ...]:
        return tuple(max(float(s), 1e-3) for s in self._train_images().std(dim=(0, 2, 3)))

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the exact tensors, so a cache key changes whenever the data does."""
        h = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_eval, self.y_eval):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


def to_float_images(images: torch.Tensor, channels_last_input: bool) -> torch.Tensor:
    """uint8 ``(N, H, W)``/``(N, H, W, C)``/``(N, C, H, W)`` -> float32 ``(N, C, H, W)`` in [0, 1]."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    elif channels_last_input:
        images = images.permute(0, 3, 1, 2)
    return images.contiguous().float().div_(255.0)


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or images.shape[-1] == size:
        return images
    out = torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return out.clamp_(0.0, 1.0)


def take_subset(x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of ``size`` examples (all of them when ``size`` is None or too big)."""
    if size is None or size >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return x[idx], y[idx]


def subset_indices(n: int, size: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of a seeded random subset of ``size`` of ``n`` examples; None for all of them."""
    if size is None or size >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def memory_bytes() -> int | None:
    """Memory this process may still use (Linux ``MemAvailable``; else physical memory); None if unknown."""
    import os

    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(spec: DatasetSpec, images: int, channels: int) -> None:
    """Refuse, before allocating, a resize whose float32 images alone need more than the machine has."""
    if spec.image_size is None:
        return
    need = images * channels * spec.image_size**2 * 4
    have = memory_bytes()
    if have is not None and need > have:
        raise DatasetError(f"dataset.image_size = {spec.image_size} on {images:,} images needs {need / 1e9:,.1f} GB "
                           f"of float32 images, more than the {have / 1e9:,.1f} GB available; lower "
                           "dataset.image_size or set dataset.train_size / eval_size")  # fmt: skip


def load_dataset(spec: DatasetSpec, data_dir: Path | None) -> ImageDataset:
    """Load the dataset a suite names. ``data_dir`` must already be absolute (resolved by the caller)."""
    loader = DATASETS.get(spec.name)
    options = {k: v for k, v in (("path", spec.path), ("num_classes", spec.num_classes)) if v is not None}
    takes = inspect.signature(loader).parameters
    for key in options:
        if key not in takes:
            raise DatasetError(
                f"dataset.{key} is not an option of dataset '{spec.name}' (it is one of 'npz'); remove it"
            )
    train_x, train_y, eval_x, eval_y, num_classes = loader(
        data_dir=data_dir, download=spec.download, split_seed=spec.split_seed, **options
    )
    train_x, train_y = take_subset(train_x, train_y, spec.train_size, spec.split_seed)
    eval_x, eval_y = take_subset(eval_x, eval_y, spec.eval_size, spec.split_seed + 1)
    check_memory(spec, len(train_y) + len(eval_y), int(train_x.shape[1]))
    return ImageDataset(
        name=spec.name,
        x_train=resize(train_x, spec.image_size),
        y_train=train_y.long(),
        x_eval=resize(eval_x, spec.image_size),
        y_eval=eval_y.long(),
        num_classes=num_classes,
    )
