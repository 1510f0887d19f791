"""A dataset in one ``.npz`` file: ``x`` uint8 ``(N, H, W, C)`` (or ``(N, H, W)``) and ``y`` integer
labels ``(N,)``, the evaluation split; optionally ``x_train``/``y_train``. Read with
``allow_pickle=False``: an object array is refused, never unpickled."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from robustbench_cnn.data import DATASETS
from robustbench_cnn.data.base import DatasetError, to_float_images

MAX_BYTES = 4 << 30


def _images(arrays: dict[str, np.ndarray], xk: str, yk: str, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = arrays[xk], arrays[yk]
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3, 4)):
        raise DatasetError(f"npz: {path}: '{xk}' is {x.dtype} {x.shape}; it must be uint8 (N, H, W, C) with C in "
                           "1, 3, 4, or (N, H, W)")  # fmt: skip
    if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu" or (len(y) and int(y.min()) < 0):
        raise DatasetError(f"npz: {path}: '{yk}' must be non-negative integer labels (N,) for the {len(x)} images")
    return to_float_images(torch.from_numpy(x.copy()), channels_last_input=True), torch.from_numpy(y.astype(np.int64))


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, refusing object arrays and files that are not one."""
    if not path.is_file():
        raise DatasetError(f"npz: no such file {path}; set dataset.path (relative to dataset.data_dir)")
    if path.stat().st_size > MAX_BYTES:
        raise DatasetError(f"npz: {path} is larger than {MAX_BYTES >> 30} GiB")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError:
        raise DatasetError(
            f"npz: {path} holds object arrays, which are never unpickled; save plain uint8/int arrays"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"npz: {path} is not a readable .npz file ({type(exc).__name__})") from None


@DATASETS.register("npz")
def load_npz(data_dir: Path | None = None, download: bool = False, split_seed: int = 0, path: str | None = None,
             num_classes: int | None = None):  # fmt: skip
    """Images and labels from one .npz file (``x``, ``y``; optionally ``x_train``, ``y_train``)."""
    if path is None:
        raise DatasetError("dataset 'npz' needs dataset.path, the .npz file (relative to dataset.data_dir)")
    file = (data_dir / path) if data_dir is not None else Path(path)
    if not file.is_absolute():
        raise DatasetError(f"dataset 'npz': path {path} is relative; set dataset.data_dir (or --data-dir)")
    arrays = read_npz(file)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DatasetError(f"npz: {file} has no '{missing[0]}' array (it has {', '.join(sorted(arrays)) or 'none'})")
    x, y = _images(arrays, "x", "y", file)
    if "x_train" in arrays and "y_train" in arrays:
        x_train, y_train = _images(arrays, "x_train", "y_train", file)
    else:
        x_train, y_train = x[:0], y[:0]
    top = max((int(t.max()) for t in (y, y_train) if len(t)), default=0)
    classes = num_classes or top + 1
    if top >= classes:
        raise DatasetError(f"npz: {file}: a label is >= dataset.num_classes = {classes}")
    if x_train.shape[1:] != x.shape[1:]:
        raise DatasetError(f"npz: {file}: x_train images {tuple(x_train.shape[1:])} differ from x {tuple(x.shape[1:])}")
    return x_train, y_train, x, y, max(classes, 2)
