"""Input normalization as the first layer of the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC memory layout for a 4-D image batch (same values, faster convolutions on CPU and GPU)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class Normalized(nn.Module):
    """``net((x - mean) / std)``.

    Input: float ``(N, C, H, W)`` in [0, 1]. Output: logits ``(N, num_classes)``. ``mean`` and
    ``std`` are buffers, so they travel with the weights into safetensors and exported graphs.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
