"""Pre-flight checks flag softmax outputs, too few classes for DLR, and randomized models; EOT
attacks a randomized model harder than single-sample gradients do."""

from functools import partial

import pytest
import torch
from torch import nn

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.attacks.preflight import EOT, is_randomized, preflight
from robustbench_cnn.errors import AttackContractError


class _NoisyGrad(torch.autograd.Function):
    """Identity forward; backward adds Gaussian noise ``scale`` x the mean |gradient| per image."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        size = grad.abs().flatten(1).mean(1).view(-1, *([1] * (grad.dim() - 1)))
        return grad + ctx.scale * size * torch.randn_like(grad), None


class Randomized(nn.Module):
    """A randomized defense: logits jitter between passes and each input gradient is mostly noise."""

    def __init__(self, base: nn.Module, scale: float = 4.0) -> None:
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x):
        logits = self.base(_NoisyGrad.apply(x, self.scale))
        return logits + 1e-3 * torch.randn_like(logits)


class FirstTwo(nn.Module):
    """A 2-class model: the base's first two logits."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x)[:, :2]


def checks(model, x, attacks=("pgd",)):
    results, randomized = preflight(model, x, attacks)
    return {r.name: r for r in results}, randomized


def test_an_honest_model_passes(tiny_model, digits):
    results, randomized = checks(tiny_model, digits.x_eval[:32], ("pgd", "apgd_dlr"))
    assert all(r.passed for r in results.values()) and not randomized


def test_softmax_outputs_are_flagged(tiny_model, digits):
    results, _ = checks(nn.Sequential(tiny_model, nn.Softmax(dim=1)), digits.x_eval[:32])
    assert not results["logits"].passed, results["logits"].detail
    assert checks(nn.Sequential(tiny_model, nn.LogSoftmax(dim=1)), digits.x_eval[:32])[0]["logits"].passed


def test_two_classes_are_flagged_when_dlr_is_asked(tiny_model, digits):
    model = FirstTwo(tiny_model)
    assert not checks(model, digits.x_eval[:32], ("pgd", "apgd_dlr"))[0]["num_classes"].passed
    assert not checks(model, digits.x_eval[:32], ("apgd_t",))[0]["num_classes"].passed
    assert checks(model, digits.x_eval[:32], ("pgd", "cw_pgd"))[0]["num_classes"].passed
    with pytest.raises(AttackContractError, match="3 classes"):
        ATTACKS.get("apgd_dlr")(model, eps=0.1, norm="linf", steps=5, num_classes=2)


def test_the_ensemble_skips_dlr_members_on_two_classes(tiny_model, digits):
    model = FirstTwo(tiny_model)
    x, y = digits.x_eval[:64], digits.y_eval[:64]
    keep = y < 2
    x, y = x[keep], y[keep]
    attack = ATTACKS.get("ensemble")(model, eps=0.3, norm="linf", steps=10, num_classes=2, restarts=1)
    assert [name for name, _, _ in attack.members] == ["apgd_ce", "cw_pgd"]
    x_adv = attack(x, y)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != y).any()


def test_randomized_model_is_flagged_and_eot_attacks_it_harder(tiny_model, digits):
    model = Randomized(tiny_model).eval()
    x, y = digits.x_eval, digits.y_eval
    assert is_randomized(model, x[:8]) and not is_randomized(tiny_model, x[:8])
    assert checks(model, x[:32])[1]
    torch.manual_seed(0)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    make = partial(ATTACKS.get("pgd"), eps=0.1, norm="linf", steps=10, step_size=None, num_classes=10)
    plain = robust_correct(model, make, x, y, clean, 0.1, "linf", progress=False, attacker=model)
    eot = robust_correct(model, make, x, y, clean, 0.1, "linf", progress=False, attacker=EOT(model, 8).eval())
    assert eot.float().mean() < plain.float().mean() - 0.05, (float(eot.float().mean()), float(plain.float().mean()))
