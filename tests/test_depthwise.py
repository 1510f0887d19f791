"""The fast depthwise weight gradient equals autograd's, and only applies inside the context."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_cnn.models import build_model
from robustbench_cnn.train.depthwise import fast_depthwise_grads


def grads(model, x, y):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize(
    ("kernel", "padding", "dilation", "bias"), [(3, 1, 1, False), (3, 2, 2, True), (5, 2, 1, True)]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_gradients_match_autograd(size, kernel, padding, dilation, bias, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 24, kernel, 1, padding, dilation, groups=24, bias=bias)
    head = nn.Linear(24 * size * size, 5)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), head)
    x, y = torch.randn(16, 24, size, size), torch.randint(0, 5, (16,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    expected = grads(model, x, y)
    (expected_x,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    with fast_depthwise_grads(model):
        assert "forward" in vars(conv)
        got = grads(model, x, y)
        (got_x,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    assert "forward" not in vars(conv)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got_x, expected_x, rtol=1e-4, atol=1e-7)


def test_mobilenet_training_gradients_are_unchanged(digits):
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 10, 1, digits.mean, digits.std, {"width_mult": 0.5, "small_input": False})
    model.train()
    x, y = digits.x_train[:32], digits.y_train[:32]
    keys = list(model.state_dict())
    torch.manual_seed(1)
    expected = grads(model, x, y)
    with fast_depthwise_grads(model):
        torch.manual_seed(1)  # dropout draws the same mask
        got = grads(model, x, y)
    assert list(model.state_dict()) == keys
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-3, atol=1e-6)


def test_only_a_cpu_model_is_patched():
    """cuDNN has no slow depthwise path; patching a GPU model cost it time (MobileNetV2, H100: 23 ms
    per training step patched vs 13-18 ms plain), so a model on any other device is left alone."""
    from fake_device import FAKE, fake_accelerator

    conv = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
    with fast_depthwise_grads(conv):
        assert "forward" in vars(conv)
    with fake_accelerator():
        conv.to(FAKE)
        with fast_depthwise_grads(conv):
            assert "forward" not in vars(conv)
