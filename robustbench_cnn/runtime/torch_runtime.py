"""Torch eager inference: latency on CPU/CUDA, and static model statistics."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from robustbench_cnn.runtime.timing import LatencyStats, measure


def torch_latency(
    model: nn.Module,
    sample_shape: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    device: torch.device,
    warmup: int = 5,
    min_repeats: int = 20,
    budget_s: float = 1.0,
    seed: int = 0,
) -> list[LatencyStats]:
    """Forward-pass latency of ``model`` in eval/inference mode for each batch size."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    stats = []
    for bs in batch_sizes:
        x = torch.rand((bs, *sample_shape), generator=gen).to(device)
        with torch.inference_mode():
            stats.append(measure(partial(model, x), bs, warmup, min_repeats, budget_s, sync=sync))
    return stats


def count_macs(model: nn.Module, sample_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (torch's FLOP counter / 2)."""
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros((1, *sample_shape), device=device))
    return counter.get_total_flops() // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
