"""Loaders read files written here in the datasets' real on-disk formats; digits is deterministic."""

import pickle
import struct

import numpy as np
import pytest
import torch

from robustbench_cnn.config.spec import DatasetSpec
from robustbench_cnn.data import DATASETS, DatasetError, load_dataset
from robustbench_cnn.data.vision import CIFAR10_DIR, CIFAR10_TEST, CIFAR10_TRAIN

RNG = np.random.default_rng(0)


def test_digits_split_is_fixed_and_in_range():
    a = load_dataset(DatasetSpec(name="digits", image_size=16), None)
    b = load_dataset(DatasetSpec(name="digits", image_size=16), None)
    assert a.x_train.shape == (1437, 1, 16, 16) and a.x_eval.shape == (360, 1, 16, 16)
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1 and a.x_train.dtype == torch.float32
    assert torch.equal(a.x_eval, b.x_eval) and a.fingerprint == b.fingerprint
    assert torch.bincount(a.y_eval, minlength=10).min() >= 35  # stratified
    other = load_dataset(DatasetSpec(name="digits", split_seed=1), None)
    assert other.fingerprint != load_dataset(DatasetSpec(name="digits"), None).fingerprint


def test_subsets_are_seeded():
    spec = DatasetSpec(name="digits", train_size=100, eval_size=50)
    a, b = load_dataset(spec, None), load_dataset(spec, None)
    assert len(a.y_train) == 100 and len(a.y_eval) == 50
    assert torch.equal(a.y_train, b.y_train)


def _idx(path, array, magic):
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        fh.write(array.astype(np.uint8).tobytes())


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_reads_idx_files(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    splits = {"train": (12, RNG.integers(0, 256, (12, 28, 28))), "t10k": (5, RNG.integers(0, 256, (5, 28, 28)))}
    for prefix, (n, images) in splits.items():
        _idx(raw / f"{prefix}-images-idx3-ubyte", images, 0x803)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 0x801)
    ds = load_dataset(DatasetSpec(name=name), tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_eval.shape == (5, 1, 28, 28)
    assert torch.allclose(ds.x_train[3, 0] * 255, torch.from_numpy(splits["train"][1][3]).float())
    assert ds.y_eval.tolist() == [0, 1, 2, 3, 4]


def test_mnist_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match=r"mnist: no t10k-images-idx3-ubyte\(\.gz\) in .*place the official files"):
        load_dataset(DatasetSpec(name="mnist"), tmp_path)


def _cifar_batch(path, n):
    data = RNG.integers(0, 256, (n, 3072)).astype(np.uint8)
    labels = [int(v) for v in RNG.integers(0, 10, n)]
    with open(path, "wb") as fh:
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"a"] * n}, fh, protocol=2)
    return data, labels


def test_cifar10_reads_python_batches(tmp_path):
    folder = tmp_path / CIFAR10_DIR
    folder.mkdir()
    train = [_cifar_batch(folder / f, 4) for f in CIFAR10_TRAIN]
    test_data, test_labels = _cifar_batch(folder / CIFAR10_TEST, 6)
    ds = load_dataset(DatasetSpec(name="cifar10"), tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_eval.shape == (6, 3, 32, 32)
    expected = torch.from_numpy(train[1][0][2].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(ds.x_train[6], expected)
    assert ds.y_eval.tolist() == test_labels


def test_cifar10_refuses_a_malicious_pickle(tmp_path):
    folder = tmp_path / CIFAR10_DIR
    folder.mkdir()
    for f in CIFAR10_TRAIN:
        _cifar_batch(folder / f, 2)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (folder / CIFAR10_TEST).write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(DatasetError, match="refusing to load global builtins.print"):
        load_dataset(DatasetSpec(name="cifar10"), tmp_path)


def test_cifar10_needs_a_data_dir():
    with pytest.raises(DatasetError, match="needs dataset.data_dir"):
        load_dataset(DatasetSpec(name="cifar10"), None)


def test_svhn_reads_mat_files(tmp_path):
    from scipy.io import savemat

    for split, n in (("train", 7), ("test", 3)):
        x = RNG.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": (np.arange(n) % 10 + 1).reshape(-1, 1)})
    ds = load_dataset(DatasetSpec(name="svhn", image_size=16), tmp_path)
    assert ds.x_train.shape == (7, 3, 16, 16)
    assert ds.y_eval.tolist() == [1, 2, 3]
    assert ds.y_train.tolist()[-1] == 7 and ds.y_train.max() <= 9  # label 10 means digit 0


def test_registry_lists_real_loaders():
    assert DATASETS.get("cifar10").__doc__.startswith("CIFAR-10")
