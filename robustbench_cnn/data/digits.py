"""The embedded default: scikit-learn's 1,797 real 8x8 handwritten digits (UCI ML digits)."""

from __future__ import annotations

from pathlib import Path

import torch

from robustbench_cnn.data import DATASETS

EVAL_FRACTION = 0.2


@DATASETS.register("digits")
def load_digits(data_dir: Path | None = None, download: bool = False, split_seed: int = 0):
    """1,797 grey 8x8 digits scaled to [0, 1]; a fixed, stratified, seeded 80/20 split.

    Ships inside scikit-learn, so it needs neither ``data_dir`` nor a download. The suite's
    ``image_size`` upsamples the images to a CNN-friendly size.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    labels = torch.from_numpy(bunch.target).long()
    idx_train, idx_eval = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=EVAL_FRACTION,
        stratify=labels.numpy(),
        random_state=split_seed,
    )
    idx_train, idx_eval = torch.from_numpy(idx_train), torch.from_numpy(idx_eval)
    return images[idx_train], labels[idx_train], images[idx_eval], labels[idx_eval], 10
