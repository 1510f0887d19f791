"""Architectures of published checkpoints, written from their descriptions (``../shared/zoo/README.md``).

Each one reproduces the parameter names and shapes of the published state dict, so the checkpoint
loads with ``strict=True`` and no renaming; parameter-free layers are free to differ. They expect
the input their authors fed them (raw [0, 1] pixels for the MNIST models, ImageNet-normalized
pixels for the CIFAR ResNets): the zoo entry (:mod:`robustbench_cnn.zoo`) declares that
preprocessing, which becomes the model's :class:`~robustbench_cnn.models.normalize.Normalized`
layer. All take ``(N, in_channels, S, S)`` and return logits ``(N, num_classes)``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from robustbench_cnn.models import MODELS
from robustbench_cnn.models.init import kaiming_init

Size = Annotated[int, Field(ge=8, le=512)]


@MODELS.register("lenet5_advertorch")
def lenet5_advertorch(num_classes: int, in_channels: int = 1, image_size: Size = 28) -> nn.Module:
    """advertorch's MNIST LeNet-5 variant: conv 32 3x3 pad 1, ReLU, max-pool 2; conv 64 3x3 pad 1,
    ReLU, max-pool 2; linear 64 (S/4)^2 -> 200 (3136 at S = 28), ReLU; linear 200 -> classes.
    Keys ``conv1``, ``conv2``, ``linear1``, ``linear2``."""
    side = image_size // 4
    return _Sequential(
        ("conv1", nn.Conv2d(in_channels, 32, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(32, 64, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("linear1", nn.Linear(64 * side * side, 200)), ("relu3", nn.ReLU()),
        ("linear2", nn.Linear(200, num_classes)),
    )  # fmt: skip


@MODELS.register("smallcnn_trades")
def smallcnn_trades(
    num_classes: int, in_channels: int = 1, image_size: Size = 28, dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
) -> nn.Module:
    """TRADES' SmallCNN (Zhang et al. 2019): four unpadded 3x3 convs (32, 32, 64, 64) with ReLU and a
    max-pool after the second and the fourth, then 1024 -> 200 -> 200 -> classes (ReLU, dropout 0.5
    after the first). Keys ``feature_extractor.conv1..4``, ``classifier.fc1..3``."""
    side = ((image_size - 4) // 2 - 4) // 2
    features = _Sequential(
        ("conv1", nn.Conv2d(in_channels, 32, 3)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(32, 32, 3)), ("relu2", nn.ReLU()), ("maxpool1", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(32, 64, 3)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(64, 64, 3)), ("relu4", nn.ReLU()), ("maxpool2", nn.MaxPool2d(2)),
    )  # fmt: skip
    classifier = _Sequential(
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64 * side * side, 200)), ("relu1", nn.ReLU()), ("drop", nn.Dropout(dropout)),
        ("fc2", nn.Linear(200, 200)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(200, num_classes)),
    )  # fmt: skip
    return _TwoStage(features, classifier)


@MODELS.register("convex_small_mnist")
def convex_small_mnist(num_classes: int, in_channels: int = 1, image_size: Size = 28) -> nn.Module:
    """Wong & Kolter's (2018) small provably robust MNIST network: conv 16 4x4 stride 2 pad 1, ReLU,
    conv 32 4x4 stride 2 pad 1, ReLU, flatten (32 (S/4)^2 = 1568 at S = 28), linear -> 100, ReLU,
    linear 100 -> classes; a plain ``Sequential`` (keys ``0``, ``2``, ``5``, ``7``)."""
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * side * side, 100), nn.ReLU(), nn.Linear(100, num_classes),
    )  # fmt: skip


class _Sequential(nn.Sequential):
    def __init__(self, *named: tuple[str, nn.Module]) -> None:
        super().__init__(OrderedDict(named))


class _TwoStage(nn.Module):
    """``classifier(feature_extractor(x))`` under those two attribute names."""

    def __init__(self, feature_extractor: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_extractor(x))


class OptionABlock(nn.Module):
    """He et al.'s CIFAR basic block with the parameter-free "option A" shortcut: where the block
    halves the resolution, the shortcut is ``x[:, :, ::2, ::2]`` zero-padded by ``planes // 4``
    channels on each side (so 16 -> 32 and 32 -> 64 channels)."""

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = (planes - c_in) // 2 if (stride != 1 or c_in != planes) else -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.pad < 0 else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class ResNetA(nn.Module):
    """conv 3x3 16, BN, ReLU; three stages of ``n`` option-A blocks (16, 32, 64 channels, stride 1, 2,
    2); global average pool; ``linear`` 64 -> classes. Keys ``conv1``, ``bn1``, ``layer{1,2,3}.N.*``,
    ``linear``."""

    def __init__(self, n: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        c_in, stages = 16, []
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(OptionABlock(c_in, planes, 2 if (i > 0 and j == 0) else 1))
                c_in = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(2, 3)))


@MODELS.register("resnet_cifar_a")
def resnet_cifar_a(
    num_classes: int, in_channels: int = 3, depth: Annotated[int, Field(ge=8, le=200)] = 20
) -> nn.Module:
    """The CIFAR ResNet-``depth`` of He et al. 2016 (depth 6n+2: 20, 32, 44, 56, 110) with option-A
    shortcuts, as in the published akamaster/pytorch_resnet_cifar10 checkpoints."""
    if (depth - 2) % 6 != 0:
        raise ValueError(f"resnet_cifar_a depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    model = ResNetA((depth - 2) // 6, num_classes, in_channels)
    kaiming_init(model)
    return model
