"""Batched, seeded data augmentation on image tensors in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Pad by ``pad`` pixels (edge replicate) and crop back at a random offset per image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "none":
        return x
    x = random_shift(x, pad=max(1, x.shape[-1] // 8), generator=generator)
    return random_flip(x, generator) if kind == "shift_flip" else x
