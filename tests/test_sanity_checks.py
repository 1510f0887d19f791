"""Each gradient-masking sanity check fails on a model built to mask gradients, and an honest
model passes them all."""

from functools import partial

import pytest
import torch
from torch import nn

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.attacks.sanity import CHECKS, convergence, run_checks

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


def checks(model, grid_data, surrogate, **settings):
    x, y = grid_data
    return {r.name: r for r in run_checks(model, x, y, EPS, surrogate=surrogate, steps=10, seed=0, **settings)}


def test_honest_model_passes_every_check(tiny_model, grid_data):
    # a single-restart PGD-10 with the reported step (2.5 eps / steps) leaves 7.5 points that PGD-50x3
    # finds on this model (9 of 120 images): within a 10-point tolerance, not within the default 5
    results = checks(tiny_model, grid_data, surrogate=tiny_model, tolerance=0.10)
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


def test_more_steps_honours_its_settings(tiny_model, grid_data):
    """The check used to run 5x steps with 3 restarts whatever more_steps_factor/more_restarts said."""
    x, y = grid_data
    results = run_checks(tiny_model, x, y, EPS, steps=4, more_steps_factor=2, more_restarts=1, seed=0)
    more = {r.name: r for r in results}["more_steps"]
    assert "PGD-4x1" in more.detail and "PGD-8x1" in more.detail, more.detail


def test_checks_test_the_reported_attack_with_its_own_step(tiny_model, grid_data):
    """The checks' PGD is the reported PGD (step 2.5 * eps / steps), not PGD with step eps / 4."""
    x, y = grid_data
    with torch.no_grad():
        clean = tiny_model(x).argmax(1) == y
    reported = {}
    for steps in (4, 20):
        make = partial(ATTACKS.get("pgd"), eps=EPS, norm="linf", steps=steps, step_size=None, num_classes=10)
        reported[steps] = float(
            robust_correct(tiny_model, make, x, y, clean, EPS, "linf", progress=False).float().mean()
        )
    for steps in (4, 20):
        results = {r.name: r for r in run_checks(tiny_model, x, y, EPS, steps=steps, seed=0)}
        assert results["pgd_vs_fgsm"].value == reported[steps]
        assert results["more_steps"].reference == reported[steps]
    assert reported[4] != run_checks_with_quarter_step(tiny_model, x, y, clean)  # the old step differs here


def run_checks_with_quarter_step(model, x, y, clean):
    make = partial(ATTACKS.get("pgd"), eps=EPS, norm="linf", steps=4, step_size=EPS / 4, num_classes=10)
    return float(robust_correct(model, make, x, y, clean, EPS, "linf", progress=False).float().mean())


def test_a_model_that_does_not_converge_is_flagged_at_that_budget(tiny_model, grid_data):
    """Gradients that help on one call in ten: PGD-20 has not converged where eps is large enough to
    matter, and the check says so at that budget only."""
    x, y = grid_data
    torch.manual_seed(0)
    model = Masking(tiny_model, sometimes)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    verdicts = {}
    for eps in (0.01, 0.15):

        def make(steps, eps=eps):
            return partial(ATTACKS.get("pgd"), eps=eps, norm="linf", steps=steps, step_size=2.5 * eps / 20,
                           num_classes=10)  # fmt: skip

        result = convergence(model, make, x, y, clean, eps, "linf", 20, more_steps_factor=3, more_restarts=2,
                             progress=False)  # fmt: skip
        verdicts[eps] = result
    assert verdicts[0.01].passed, verdicts[0.01].detail
    assert not verdicts[0.15].passed, verdicts[0.15].detail
    assert verdicts[0.15].value < verdicts[0.15].reference  # more steps lowered robust accuracy
