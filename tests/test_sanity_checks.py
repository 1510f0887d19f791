"""Each gradient-masking sanity check fails on a model built to mask gradients, and an honest
model passes them all."""

import pytest
import torch
from torch import nn

from robustbench_cnn.attacks.sanity import CHECKS, run_checks

EPS = 0.1


class _Masked(torch.autograd.Function):
    """Identity forward; backward keeps the gradient only where ``keep(x)`` says so."""

    @staticmethod
    def forward(ctx, x, keep):
        ctx.save_for_backward(keep(x).to(x.dtype))
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class Masking(nn.Module):
    """Wraps an honest model; predictions are unchanged, only gradients are masked."""

    def __init__(self, base: nn.Module, keep) -> None:
        super().__init__()
        self.base, self.keep = base, keep

    def forward(self, x):
        return self.base(_Masked.apply(x, self.keep))


def on_grid(x):  # gradient only on the data's own 1/255 grid (shattered away from the data)
    return (x * 255 - (x * 255).round()).abs().flatten(1).amax(1).view(-1, 1, 1, 1).expand_as(x) < 1e-4


def never(x):
    return torch.zeros_like(x, dtype=torch.bool)


def sometimes(x):  # a useful gradient on one call in ten (stochastic gradients)
    return torch.full_like(x, float(torch.rand(()) < 0.1), dtype=torch.float32).bool()


@pytest.fixture(scope="module")
def grid_data(digits):
    return (digits.x_eval * 255).round() / 255, digits.y_eval


def checks(model, grid_data, surrogate):
    x, y = grid_data
    return {r.name: r for r in run_checks(model, x, y, EPS, surrogate=surrogate, steps=10, seed=0)}


def test_honest_model_passes_every_check(tiny_model, grid_data):
    results = checks(tiny_model, grid_data, surrogate=tiny_model)
    assert set(results) == set(CHECKS)
    assert all(r.passed for r in results.values()), {n: r.detail for n, r in results.items()}


def test_zero_gradients_fail_large_eps_transfer_and_grad_norm(tiny_model, grid_data):
    results = checks(Masking(tiny_model, never), grid_data, surrogate=tiny_model)
    for name in ("large_eps", "transfer", "grad_norm"):
        assert not results[name].passed, (name, results[name].detail)


def test_gradients_only_on_the_data_fail_pgd_vs_fgsm(tiny_model, grid_data):
    results = checks(Masking(tiny_model, on_grid), grid_data, surrogate=tiny_model)
    assert not results["pgd_vs_fgsm"].passed, results["pgd_vs_fgsm"].detail


def test_stochastic_gradients_fail_more_steps(tiny_model, grid_data):
    torch.manual_seed(0)
    results = checks(Masking(tiny_model, sometimes), grid_data, surrogate=tiny_model)
    assert not results["more_steps"].passed, results["more_steps"].detail
