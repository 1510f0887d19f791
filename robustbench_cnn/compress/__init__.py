"""Compression steps that derive a model from others, registered by name.

A compressor has the signature ``fn(model, spec, job) -> TrainLog``: it fills ``model`` (freshly
built with the suite entry's ``arch``/``params``) from the upstream models named by the spec, e.g.
pruning a trained model's channels and fine-tuning, or distilling a teacher into a student. Its
``spec`` attribute is the frozen class of its parameters. Suites select one per model::

    [[models]]
    name = "cnn_pruned"
    compress = { name = "prune", source = "cnn", ratio = [0.3, 0.5] }
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from robustbench_cnn.registry import Registry

if TYPE_CHECKING:
    import torch

    from robustbench_cnn.data.base import ImageDataset

COMPRESSORS: Registry = Registry("compression", ("robustbench_cnn.compress.prune", "robustbench_cnn.compress.distill"))


@dataclass(frozen=True)
class CompressJob:
    """What a compressor may use besides its own parameters.

    ``upstream``: the suite's prepared models by name (eval mode, on ``device``);
    ``finetune(model, loss_fn=None)``: trains with the entry's ``train`` recipe and defense.
    """

    upstream: dict
    data: ImageDataset
    finetune: Callable
    seed: int
    device: torch.device
    progress: bool = True


def register_compressor(name: str, spec: type) -> Callable:
    """Register a compressor under ``name`` with its spec class."""

    def decorator(fn: Callable) -> Callable:
        fn.spec = spec  # type: ignore[attr-defined]
        return COMPRESSORS.register(name)(fn)

    return decorator


__all__ = ["COMPRESSORS", "CompressJob", "register_compressor"]
