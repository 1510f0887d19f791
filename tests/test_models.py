import importlib.util

import pytest
import torch

from robustbench_cnn.errors import UnknownNameError
from robustbench_cnn.models import MODELS, Normalized, build_model, check_params
from robustbench_cnn.models.sources import ModelSourceError
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


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"width": 1.5}, "params.width = 1.5: Input should be a valid integer; arch 'simple_cnn' takes width: int in"),
        ({"stages": 2.0}, "params.stages = 2.0: Input should be a valid integer"),
        ({"width": 0}, "params.width = 0: Input should be greater than or equal to 1"),
        ({"stages": 40}, "params.stages = 40: Input should be less than or equal to 6"),
        ({"width": True}, "params.width = True: Input should be a valid integer"),
        ({"num_classes": 3}, "params.num_classes: set by the dataset"),
    ],
)
def test_params_are_checked_against_the_signature_before_building(params, match):
    with pytest.raises(ModelSourceError, match=match.replace("(", "\\(")) as info:
        check_params("simple_cnn", params)
    assert "\n" not in str(info.value)


def test_built_in_factories_take_their_documented_params():
    check_params("resnet", {"depth": 20, "width": 1, "preact": True})  # an int is a valid float
    check_params("mobilenet_v2", {"width_mult": 0.25, "small_input": False, "dropout": 0.0})
    with pytest.raises(ModelSourceError, match="width_mult: float in \\(0, 4\\]"):
        check_params("mobilenet_v2", {"width_mult": -1.0})
    for arch, params in [("simple_cnn", {"width": 512, "stages": 6}), ("resnet", {"depth": 200, "width": 16})]:
        with pytest.raises(ModelSourceError, match="M parameters \\(limit 250M\\)"):  # each value in range, not all
            build_model(arch, 10, 1, [0.5], [0.5], params)


def test_torchvision_models_by_name_are_adapted_to_the_dataset():
    torch.manual_seed(0)
    model = build_model("torchvision:shufflenet_v2_x0_5", 7, 1, [0.5], [0.25], image_size=16).eval()
    assert model.net.conv1[0].in_channels == 1 and model.net.fc.out_features == 7
    assert model(torch.rand(3, 1, 16, 16)).shape == (3, 7)
    with pytest.raises(ModelSourceError, match="pretrained weights are never downloaded"):
        check_params("torchvision:shufflenet_v2_x0_5", {"weights": "DEFAULT"})
    with pytest.raises(UnknownNameError, match="did you mean 'shufflenet_v2_x0_5'"):
        check_params("torchvision:shufflenet_v2_x05", {})


def test_a_model_that_cannot_take_the_images_is_refused_in_one_line():
    with pytest.raises(ModelSourceError, match="fails on 1x16x16 images: .*use a larger dataset.image_size"):
        build_model("torchvision:squeezenet1_1", 10, 1, [0.5], [0.25], image_size=16)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_missing_is_a_one_line_error():
    with pytest.raises(ModelSourceError, match="needs timm, which is not installed; pip install"):
        check_params("timm:resnet18", {})


FACTORY = '''
from torch import nn


def tiny(width: int = 4):
    """No num_classes/in_channels: the suite adapts the first conv and the last linear."""
    layers = [nn.Conv2d(3, width, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1000)]
    return nn.Sequential(*layers)
'''


def test_module_factories_are_imported_from_base_dir_and_adapted(tmp_path):
    (tmp_path / "own_factories_a.py").write_text(FACTORY)
    model = build_model("own_factories_a:tiny", 10, 1, [0.5], [0.5], {"width": 6}, base_dir=tmp_path, image_size=8)
    assert model.net[0].in_channels == 1 and model.net[-1].out_features == 10
    with pytest.raises(UnknownNameError, match="unknown parameter 'widht' for arch 'own_factories_a:tiny'"):
        check_params("own_factories_a:tiny", {"widht": 6}, tmp_path)
    with pytest.raises(ModelSourceError, match="no module named 'nowhere_xyz' in"):
        check_params("nowhere_xyz:tiny", {}, tmp_path)
