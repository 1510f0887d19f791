"""Input normalization as the first layer of the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NHWC_MIN_CHANNELS = 16  # a conv narrower than this keeps its model in NCHW (see :func:`layout`)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC memory layout for a 4-D image batch (same values, faster convolutions on CPU and GPU)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def layout(model: nn.Module) -> torch.memory_format:
    """The memory format ``model`` runs in: channels_last (NHWC: same values, faster convolutions),
    except where a conv has fewer than :data:`NHWC_MIN_CHANNELS` output channels (a pruned network).

    torch 2.14's oneDNN corrupts the heap in the backward pass of a channels_last residual network
    with 8-12 channel stages, on AVX-512 CPUs with more than one thread (``free(): invalid next
    size``, SIGSEGV or SIGABRT within a few steps; not with 16+ channels, one thread, NCHW, or
    ``ONEDNN_MAX_CPU_ISA=AVX2``). ``tools/onednn_nhwc_crash.py`` reproduces it with torch alone. The
    choice depends on the model only, so a model trains to the same numbers on every machine."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    narrow = any(c.out_channels < NHWC_MIN_CHANNELS for c in convs)
    return torch.contiguous_format if narrow else torch.channels_last


def as_layout(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """A 4-D batch in memory format ``fmt`` (anything else as it is)."""
    return x.contiguous(memory_format=fmt) if x.dim() == 4 else x


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
