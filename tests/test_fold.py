"""BatchNorm folding for attacks: same logits and input gradients, cached per model state, refused when unsafe."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.crafting import Crafting
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.models import build_model
from robustbench_cnn.models.fold import folded, same_function

ARCHS = [
    ("simple_cnn", {"width": 8, "stages": 2}),
    ("resnet", {"depth": 8}),
    ("resnet", {"depth": 8, "preact": True}),
    ("mobilenet_v2", {"width_mult": 0.25}),
]


def with_running_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, then eval mode."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 2.0)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.fixture(params=ARCHS, ids=lambda a: f"{a[0]}-{'-'.join(f'{k}{v}' for k, v in a[1].items())}")
def bn_model(request, digits):
    arch, params = request.param
    torch.manual_seed(0)
    model = build_model(arch, 10, 1, digits.mean, digits.std, params)
    return with_running_stats(model, digits.x_train[:64])


def test_folded_copy_has_the_same_logits_and_input_gradients(bn_model, digits):
    x, y = digits.x_eval[:32], digits.y_eval[:32]
    flags = [p.requires_grad for p in bn_model.parameters()]
    copy = folded(bn_model, x[:8], y[:8])
    assert copy is not bn_model
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in bn_model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in copy.modules()) < n_bn  # pre-activation BNs stay
    assert not any(p.requires_grad for p in copy.parameters())
    assert [p.requires_grad for p in bn_model.parameters()] == flags  # the model itself is untouched
    assert same_function(copy, bn_model, x, y)  # on images the probe did not include


def test_fold_is_cached_until_the_weights_change(bn_model, digits):
    x, y = digits.x_eval[:8], digits.y_eval[:8]
    first = folded(bn_model, x, y)
    assert folded(bn_model, x, y) is first
    with torch.no_grad():
        next(bn_model.parameters()).mul_(1.5)  # an in-place update, as an optimizer step
    second = folded(bn_model, x, y)
    assert second is not first
    assert same_function(second, bn_model, x, y)


def test_models_that_cannot_be_folded_are_used_as_they_are(bn_model, digits):
    x, y = digits.x_eval[:8], digits.y_eval[:8]
    assert folded(bn_model.train(), x, y) is bn_model  # batch statistics: nothing to fold
    bn_model.eval()
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    assert folded(plain, x, y) is plain  # no BatchNorm


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        h = self.bn(self.conv(x))
        if h.mean() > 0:
            h = h.relu()
        return self.fc(h.flatten(1))


def test_untraceable_models_are_used_as_they_are(digits):
    model = Branchy().eval()
    assert folded(model, digits.x_eval[:8], digits.y_eval[:8]) is model


class Masked(nn.Module):
    """The same logits as ``base`` with no input gradient at all (gradient masking)."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x.detach()) + 0 * x.sum()


def test_the_gradient_check_sees_a_function_with_masked_gradients(digits):
    base = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x, y = digits.x_eval[:8], digits.y_eval[:8]
    assert same_function(Masked(base), base, x, None)  # the logits alone cannot tell
    assert not same_function(Masked(base), base, x, y)


@pytest.mark.parametrize(
    ("attack", "norm", "eps"), [("pgd", "linf", 0.1), ("pgd", "l2", 1.0), ("apgd_ce", "linf", 0.1)]
)
def test_folded_attacks_match_unfolded_ones_and_the_model_decides(bn_model, digits, attack, norm, eps):
    x, y = digits.x_eval, digits.y_eval
    with torch.no_grad():
        clean = bn_model(x).argmax(1) == y
    make = partial(ATTACKS.get(attack), eps=eps, norm=norm, steps=10, step_size=None, num_classes=10)
    adv = x.clone()
    fast = robust_correct(bn_model, make, x, y, clean, eps, norm, progress=False, adv_out=adv)
    slow = robust_correct(bn_model, make, x, y, clean, eps, norm, progress=False, crafting=Crafting(False))
    assert abs(float(fast.float().mean()) - float(slow.float().mean())) <= 0.02  # the stated tolerance: 2 pt
    with torch.no_grad():
        verdict = (bn_model(adv).argmax(1) == y) & clean
    assert torch.equal(fast, verdict)  # robust means: the model itself still classifies the example right


def test_input_gradients_of_the_fold_match_autograd_on_the_model(digits):
    torch.manual_seed(0)
    model = with_running_stats(build_model("resnet", 10, 1, digits.mean, digits.std, {"depth": 8}), digits.x_train[:64])
    x, y = digits.x_eval[:16].clone().requires_grad_(True), digits.y_eval[:16]
    (expected,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    copy = folded(model, x[:8].detach(), y[:8])
    (got,) = torch.autograd.grad(F.cross_entropy(copy(x), y), x)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-6)


class _GridOnly(torch.autograd.Function):
    """Identity forward; the gradient survives only for images on the 1/255 grid (shattered gradients)."""

    @staticmethod
    def forward(ctx, x):
        on_grid = (x * 255 - (x * 255).round()).abs().flatten(1).amax(1) < 1e-4
        ctx.save_for_backward(on_grid.to(x.dtype).view(-1, 1, 1, 1))
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask


def grid_only(x):
    return _GridOnly.apply(x)


torch.fx.wrap("grid_only")  # traced as one call, as a user's preprocessing function would be


class GridMasked(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(grid_only(x))


def test_the_fold_keeps_the_models_own_gradient_masking(bn_model, digits):
    """The copy runs the model's own forward, so a masking defense masks the attack on the copy too
    (a re-traced graph would inline the autograd function's forward and silently drop the masking)."""
    model = GridMasked(bn_model).eval()
    x, y = (digits.x_eval[:16] * 255).round() / 255, digits.y_eval[:16]
    copy = folded(model, x[:8], y[:8])
    assert copy is not model  # folded: the probe is on the grid, where the gradients agree
    off_grid = (x + 0.3 / 255).clamp(0, 1)
    for m in (model, copy):
        x_req = off_grid.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(m(x_req), y), x_req)
        assert torch.count_nonzero(grad) == 0
    assert same_function(copy, model, off_grid, y)
