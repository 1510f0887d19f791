"""A plain VGG-style CNN: the baseline every robustness paper starts from."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import nn

from robustbench_cnn.models import MODELS
from robustbench_cnn.models.build import refuse_if_too_large
from robustbench_cnn.models.init import kaiming_init


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@MODELS.register("simple_cnn")
def simple_cnn(
    num_classes: int,
    in_channels: int = 3,
    width: Annotated[int, Field(ge=1, le=512)] = 32,
    stages: Annotated[int, Field(ge=1, le=6)] = 3,
    convs_per_stage: Annotated[int, Field(ge=1, le=8)] = 2,
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2,
) -> nn.Module:
    """Conv-BN-ReLU blocks in ``stages`` stages; channels double as the resolution halves.

    ``width`` channels in the first stage, ``width * 2**(stages-1)`` in the last, then global
    average pooling, dropout and a linear head. Kaiming init; no conv bias before BatchNorm.
    Input ``(N, in_channels, H, W)`` (normalized), output logits ``(N, num_classes)``.
    """
    channels = [width * 2**s for s in range(stages)]
    convs = sum(9 * c * c * convs_per_stage for c in channels)  # an upper bound on the conv weights
    refuse_if_too_large(convs, f"simple_cnn(width={width}, stages={stages}, convs_per_stage={convs_per_stage})")
    layers: list[nn.Module] = []
    c_in = in_channels
    for stage in range(stages):
        c_out = width * 2**stage
        if stage > 0:
            layers.append(nn.MaxPool2d(2))
        for _ in range(convs_per_stage):
            layers += _conv_bn_relu(c_in, c_out)
            c_in = c_out
    model = nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(c_in, num_classes),
    )
    kaiming_init(model)
    return model
