"""CIFAR-style ResNets (He et al. 2016): 3x3 stem, basic blocks, no max-pool.

``depth`` 6n+2 (20, 32, 44, 56, 110) gives the three-stage CIFAR family with 16/32/64 base
channels; ``depth`` 18 or 34 gives the four-stage ResNet-18/34 with 64..512 channels, as used by
robustness papers on CIFAR-10. ``preact=True`` gives the pre-activation variant (PreActResNet-18,
He et al. 2016b; Wong et al. 2020).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import nn

from robustbench_cnn.models import MODELS
from robustbench_cnn.models.build import refuse_if_too_large
from robustbench_cnn.models.init import kaiming_init

_IMAGENET_STYLE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut; post- or pre-activation."""

    def __init__(self, c_in: int, c_out: int, stride: int, preact: bool) -> None:
        super().__init__()
        self.preact = preact
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in if preact else c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            proj: list[nn.Module] = [nn.Conv2d(c_in, c_out, 1, stride, bias=False)]
            if not preact:
                proj.append(nn.BatchNorm2d(c_out))
            self.shortcut = nn.Sequential(*proj)

    def forward(self, x):
        if self.preact:
            out = self.relu(self.bn1(x))
            shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(out)
            out = self.conv1(out)
            out = self.conv2(self.relu(self.bn2(out)))
            return out + shortcut
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self, blocks: tuple[int, ...], widths: tuple[int, ...], num_classes: int, in_channels: int, preact: bool
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        if not preact:
            stem += [nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=False)]
        self.stem = nn.Sequential(*stem)
        layers: list[nn.Module] = []
        c_in = widths[0]
        for i, (n, c_out) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(c_in, c_out, 2 if (i > 0 and j == 0) else 1, preact))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.head_act = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=False)) if preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.head_act(self.layers(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("resnet")
def resnet(
    num_classes: int,
    in_channels: int = 3,
    depth: Annotated[int, Field(ge=8, le=200)] = 20,
    width: Annotated[float, Field(gt=0, le=16)] = 1.0,
    preact: bool = False,
) -> nn.Module:
    """CIFAR-style ResNet-``depth``; ``width`` scales every stage's channels.

    Input ``(N, in_channels, H, W)`` (normalized), output logits ``(N, num_classes)``.
    """
    blocks: tuple[int, ...]
    base: tuple[int, ...]
    if depth in _IMAGENET_STYLE:
        blocks, base = _IMAGENET_STYLE[depth], (64, 128, 256, 512)
    elif depth >= 8 and (depth - 2) % 6 == 0:
        blocks, base = ((depth - 2) // 6,) * 3, (16, 32, 64)
    else:
        raise ValueError(f"resnet depth must be 6n+2 (20, 32, 56, ...) or 18/34, got {depth}")
    widths = tuple(max(4, round(c * width)) for c in base)
    refuse_if_too_large(sum(18 * n * c * c for n, c in zip(blocks, widths, strict=True)), f"resnet-{depth} x{width}")
    model = ResNet(blocks, widths, num_classes, in_channels, preact)
    kaiming_init(model)
    return model
