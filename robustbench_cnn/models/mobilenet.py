"""MobileNetV2 (Sandler et al. 2018), torchvision's implementation adapted to small inputs."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import nn

from robustbench_cnn.models import MODELS

# torchvision's ImageNet setting: expansion t, channels c, repeats n, stride s.
_IMAGENET_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


@MODELS.register("mobilenet_v2")
def mobilenet_v2(
    num_classes: int,
    in_channels: int = 3,
    width_mult: Annotated[float, Field(gt=0, le=4)] = 1.0,
    small_input: bool = True,
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2,
) -> nn.Module:
    """torchvision's MobileNetV2 with a width multiplier and ``in_channels`` input channels.

    ``small_input`` (for 32x32-ish images, as in CIFAR ports): the stem convolution and the
    second bottleneck stage use stride 1, so the total stride is 8 instead of 32.
    Input ``(N, in_channels, H, W)`` (normalized), output logits ``(N, num_classes)``.
    """
    from torchvision.models import MobileNetV2

    setting = [list(row) for row in _IMAGENET_SETTING]
    if small_input:
        setting[1][3] = 1
    model = MobileNetV2(
        num_classes=num_classes, width_mult=width_mult, inverted_residual_setting=setting, dropout=dropout
    )
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(
        in_channels, stem.out_channels, 3, stride=1 if small_input else 2, padding=1, bias=False
    )
    nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    return model
