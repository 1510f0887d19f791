"""Real image datasets on disk, in the formats torchvision downloads.

Nothing is downloaded unless the suite says ``download = true``; then torchvision fetches and
checksum-verifies the official archives. Reading never unpickles arbitrary objects: CIFAR-10's
pickled batches go through an unpickler that admits only numpy arrays, MNIST's IDX files and
SVHN's ``.mat`` files are parsed as data.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from robustbench_cnn.data import DATASETS
from robustbench_cnn.data.base import DatasetError, to_float_images

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"


def _require_dir(name: str, data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DatasetError(f"dataset '{name}' needs dataset.data_dir (or --data-dir)")
    return data_dir


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Admits the handful of globals a pickled numpy array needs and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(
            f"cifar10: missing {path}; set dataset.download = true or place the python-version batches there"
        )
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as exc:
        raise DatasetError(f"cifar10: {path} is not a CIFAR-10 batch ({exc})") from None
    if len(data) != len(labels):
        raise DatasetError(f"cifar10: {path} has {len(data)} images but {len(labels)} labels")
    return data, labels


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Path | None = None, download: bool = False, split_seed: int = 0):
    """CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test RGB 32x32 images, 10 classes."""
    root = _require_dir("cifar10", data_dir)
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=True, download=True)
    folder = root / CIFAR10_DIR
    train = [_read_cifar_batch(folder / f) for f in CIFAR10_TRAIN]
    x_test, y_test = _read_cifar_batch(folder / CIFAR10_TEST)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    to_tensor = lambda a: to_float_images(torch.from_numpy(a), channels_last_input=False)  # noqa: E731
    return to_tensor(x_train), torch.from_numpy(y_train), to_tensor(x_test), torch.from_numpy(y_test), 10


IDX_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dimension, images: 3
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
MAX_IDX_BYTES = 1 << 30


def _find_idx(folders: list[Path], name: str) -> Path | None:
    """``name`` or ``name.gz`` in the first folder that has it (torchvision un-gzips; people download .gz)."""
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, dataset: str) -> np.ndarray:
    """An IDX file (LeCun's format: big-endian magic, dimension sizes, uint8 data), gzipped or not."""
    import gzip

    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as fh:
            raw = fh.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{dataset}: {path} cannot be read ({type(exc).__name__}: {exc}); re-download it") from None
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    ndim = IDX_MAGIC.get(magic)
    if ndim is None or len(raw) > MAX_IDX_BYTES:
        raise DatasetError(f"{dataset}: {path} is not an MNIST IDX file of uint8 data (magic {magic})")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    size = int(np.prod(dims))
    body = raw[4 + 4 * ndim :]
    if len(body) != size:
        raise DatasetError(f"{dataset}: {path} holds {len(body)} data bytes, its header says {size}; re-download it")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _read_mnist_split(folders: list[Path], split: str, dataset: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    images, labels = (_find_idx(folders, name) for name in MNIST_FILES[split])
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        missing = MNIST_FILES[split][0 if images is None else 1]
        raise DatasetError(f"{dataset}: {missing}(.gz) is missing beside {labels or images}")
    x, y = read_idx(images, dataset), read_idx(labels, dataset)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or (len(y) and int(y.max()) > 9):
        raise DatasetError(f"{dataset}: {images.name} and {labels.name} do not pair up ({x.shape} images, "
                           f"{y.shape} labels in 0..9)")  # fmt: skip
    return to_float_images(torch.from_numpy(x.copy()), channels_last_input=False), torch.from_numpy(y.astype(np.int64))


def _load_mnist_like(cls_name: str, dataset: str, data_dir: Path | None, download: bool):
    """MNIST-format IDX files, gzipped (as downloaded by hand) or not (as torchvision leaves them), in
    ``DATA_DIR/<cls_name>/raw`` or ``DATA_DIR`` itself. Only the test files: an empty training split
    (enough for suites that load checkpoints)."""
    root = _require_dir(dataset, data_dir)
    if download:
        import torchvision.datasets

        for is_train in (True, False):
            getattr(torchvision.datasets, cls_name)(str(root), train=is_train, download=True)
    folders = [root / cls_name / "raw", root]
    test = _read_mnist_split(folders, "test", dataset)
    if test is None:
        raise DatasetError(f"{dataset}: no {MNIST_FILES['test'][0]}(.gz) in {root / cls_name / 'raw'} or {root}; "
                           "place the official files there or set dataset.download = true")  # fmt: skip
    train = _read_mnist_split(folders, "train", dataset) or (test[0][:0], test[1][:0])
    return (*train, *test, 10)


@DATASETS.register("mnist")
def load_mnist(data_dir: Path | None = None, download: bool = False, split_seed: int = 0):
    """MNIST (LeCun et al. 1998): 60,000 / 10,000 grey 28x28 digits, from the official IDX files (.gz or not)."""
    return _load_mnist_like("MNIST", "mnist", data_dir, download)


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(data_dir: Path | None = None, download: bool = False, split_seed: int = 0):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 / 10,000 grey 28x28 clothing images, IDX files."""
    return _load_mnist_like("FashionMNIST", "fashion_mnist", data_dir, download)


def _read_svhn(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.io import loadmat

    path = root / f"{split}_32x32.mat"
    if not path.is_file():
        raise DatasetError(f"svhn: missing {path}; set dataset.download = true or place the .mat files there")
    try:
        mat = loadmat(str(path))
        x = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)))  # (32, 32, 3, N) -> (N, 3, 32, 32)
        y = mat["y"].astype(np.int64).reshape(-1) % 10  # SVHN stores the digit 0 as label 10
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"svhn: {path} is not an SVHN .mat file ({exc})") from None
    return to_float_images(torch.from_numpy(x), channels_last_input=False), torch.from_numpy(y)


@DATASETS.register("svhn")
def load_svhn(data_dir: Path | None = None, download: bool = False, split_seed: int = 0):
    """SVHN cropped digits (Netzer et al. 2011): 73,257 train / 26,032 test RGB 32x32 images."""
    root = _require_dir("svhn", data_dir)
    if download:
        from torchvision.datasets import SVHN

        for split in ("train", "test"):
            SVHN(str(root), split=split, download=True)
    return (*_read_svhn(root, "train"), *_read_svhn(root, "test"), 10)
