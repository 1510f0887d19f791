"""Datasets: the embedded ``digits`` default and real loaders (CIFAR-10, MNIST, Fashion-MNIST, SVHN).

Every loader returns an :class:`~robustbench_cnn.data.base.ImageDataset` whose images are float32
tensors of shape ``(N, C, H, W)`` with values in [0, 1]; normalization is the model's job.
"""

from robustbench_cnn.data.base import DatasetError, ImageDataset, load_dataset
from robustbench_cnn.data.catalog import DATASETS

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "load_dataset"]
