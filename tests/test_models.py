import pytest
import torch

from robustbench_cnn.errors import UnknownNameError
from robustbench_cnn.models import MODELS, Normalized, build_model
from robustbench_cnn.runtime.torch_runtime import count_macs, count_params

ARCHS = [
    ("simple_cnn", {"width": 8}),
    ("resnet", {"depth": 8, "width": 0.5}),
    ("resnet", {"depth": 18, "width": 0.125, "preact": True}),
    ("mobilenet_v2", {"width_mult": 0.25}),
]


@pytest.mark.parametrize(("arch", "params"), ARCHS)
@pytest.mark.parametrize(("channels", "size"), [(1, 16), (3, 32)])
def test_models_take_unit_images_and_return_logits(arch, params, channels, size):
    torch.manual_seed(0)
    model = build_model(arch, 10, channels, [0.5] * channels, [0.25] * channels, params).eval()
    assert isinstance(model, Normalized)
    out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert count_params(model) > 0 and count_macs(model, (channels, size, size)) > 0


def test_normalization_lives_inside_the_model():
    model = build_model("simple_cnn", 10, 1, [0.3], [0.2], {"width": 4}).eval()
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(model(x), model.net((x - 0.3) / 0.2))
    assert set(model.state_dict()) >= {"mean", "std"}


def test_same_seed_same_init():
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        outs.append(build_model("resnet", 10, 1, [0.5], [0.5], {"depth": 8}).eval()(torch.ones(1, 1, 8, 8)))
    assert torch.equal(*outs)


def test_bad_params_are_named():
    with pytest.raises(UnknownNameError, match="unknown parameter 'depht' for arch 'resnet'; did you mean 'depth'"):
        build_model("resnet", 10, 1, [0.5], [0.5], {"depht": 20})
    with pytest.raises(ValueError, match="6n\\+2"):
        MODELS.get("resnet")(num_classes=10, depth=21)


def test_simple_cnn_has_no_conv_bias_before_bn():
    net = build_model("simple_cnn", 10, 1, [0.5], [0.5]).net
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.bias is None for c in convs)
