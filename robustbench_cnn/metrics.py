"""Classification metrics on predictions; all return plain floats."""

from __future__ import annotations

import torch


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).float().mean()) if len(y) else float("nan")


def macro_f1(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over all ``num_classes`` classes (scikit-learn)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y.numpy(), pred.numpy(), labels=list(range(num_classes)), average="macro", zero_division=0))


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): confidence-vs-accuracy gap over ``n_bins`` equal-width bins, weighted by bin mass.

    ``probs``: ``(N, K)`` softmax probabilities; ``y``: ``(N,)`` labels.
    """
    conf, pred = probs.max(dim=1)
    correct = (pred == y).float()
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    ece = torch.zeros(())
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.float().mean() * (conf[mask].mean() - correct[mask].mean()).abs()
    return float(ece)


def clopper_pearson(value: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided exact (Clopper & Pearson 1934) ``level`` interval of a proportion ``value`` of ``n``
    trials (``k = round(value * n)`` successes); ``(0, 1)`` when ``n`` is 0."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    k, tail = round(value * n), (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high
