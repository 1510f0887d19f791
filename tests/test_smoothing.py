"""Randomized smoothing against a base classifier whose smoothed probability is known exactly."""

import pytest
import torch
from scipy.stats import norm
from torch import nn

from robustbench_cnn.defenses.smoothing import ABSTAIN, Smoothed, lower_confidence_bound

SIGMA = 0.5


class Threshold(nn.Module):
    """Class 1 iff pixel 0 > t. Under N(0, s^2) noise, P(class 1) = Phi((x0 - t) / s), so the
    smoothed classifier's exact L2 radius is |x0 - t|: the distance to the decision boundary."""

    def __init__(self, t: float = 0.5) -> None:
        super().__init__()
        self.t = t

    def forward(self, x):
        z = x.flatten(1)[:, 0] - self.t
        return torch.stack([-z, z], dim=1)


class ThreeWay(nn.Module):
    """Classes 0/1/2 with probabilities 0.40/0.35/0.25 under noise on a zero pixel 0."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.a, self.b = norm.ppf(0.40) * sigma, norm.ppf(0.75) * sigma

    def forward(self, x):
        v = x.flatten(1)[:, 0]
        cls = (v > self.a).long() + (v > self.b).long()
        return nn.functional.one_hot(cls, 3).float()


def image(x0: float) -> torch.Tensor:
    x = torch.zeros(1, 4, 4)
    x[0, 0, 0] = x0
    return x


@pytest.mark.parametrize("x0", [0.55, 0.6, 0.75, 0.9, 1.0, 0.3, 0.1])
def test_certified_radius_never_exceeds_the_exact_one(x0):
    smoothed = Smoothed(Threshold(0.5), 2, SIGMA, batch_size=5000)
    gen = torch.Generator().manual_seed(0)
    exact = abs(x0 - 0.5)
    cert = smoothed.certify(image(x0), n0=100, n=20000, alpha=0.001, generator=gen)
    if cert.label == ABSTAIN:
        assert norm.cdf(exact / SIGMA) < 0.56  # only near the boundary
        return
    assert cert.label == int(x0 > 0.5)
    assert cert.radius <= exact
    assert cert.radius >= exact - 0.05  # close for large n


def test_radius_tightens_as_n_grows():
    smoothed = Smoothed(Threshold(0.5), 2, SIGMA, batch_size=10000)
    radii = [
        smoothed.certify(image(0.8), 100, n, 0.001, torch.Generator().manual_seed(1)).radius for n in (500, 100000)
    ]
    assert radii[0] < radii[1] <= 0.3
    assert radii[1] == pytest.approx(0.3, abs=0.02)


def test_abstains_when_top_class_is_below_half():
    smoothed = Smoothed(ThreeWay(SIGMA), 3, SIGMA)
    cert = smoothed.certify(image(0.0), 100, 5000, 0.001, torch.Generator().manual_seed(0))
    assert cert.label == ABSTAIN and cert.radius == 0.0 and cert.p_lower < 0.5
    assert smoothed.predict(image(0.0), 1000, 0.001, torch.Generator().manual_seed(0)) == ABSTAIN


def test_predict_answers_when_the_top_class_is_clear():
    smoothed = Smoothed(Threshold(0.5), 2, SIGMA)
    assert smoothed.predict(image(1.0), 1000, 0.001, torch.Generator().manual_seed(0)) == 1


def test_same_seed_same_counts():
    smoothed = Smoothed(Threshold(0.5), 2, SIGMA)
    a = smoothed.sample_counts(image(0.6), 3000, torch.Generator().manual_seed(3))
    b = smoothed.sample_counts(image(0.6), 3000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and int(a.sum()) == 3000


def test_clopper_pearson_lower_bound():
    assert lower_confidence_bound(0, 100, 0.05) == 0.0
    assert lower_confidence_bound(100, 100, 0.05) == pytest.approx(0.05 ** (1 / 100))
    assert lower_confidence_bound(50, 100, 0.001) < 0.5


@pytest.mark.parametrize("x0", [0.3, 0.55, 0.9])
def test_onnxruntime_counts_equal_torch_counts(x0, tiny_model, digits):
    """The ONNX Runtime path classifies the same noise as torch: the same counts on a trained CNN
    (here on a digit, and on the exact-radius classifier)."""
    for base, x, k in ((Threshold(0.5), image(x0), 2), (tiny_model, digits.x_eval[int(x0 * 10)], 10)):
        torch_counts = Smoothed(base, k, SIGMA).sample_counts(x, 2000, torch.Generator().manual_seed(1))
        ort = Smoothed(base, k, SIGMA, runtime="onnxruntime")
        assert torch.equal(ort.sample_counts(x, 2000, torch.Generator().manual_seed(1)), torch_counts)


def test_unknown_smoothing_runtime_is_an_error():
    with pytest.raises(ValueError, match="not torch or onnxruntime"):
        Smoothed(Threshold(0.5), 2, SIGMA, runtime="tflite")
