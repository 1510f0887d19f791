"""How attacks craft their examples: the model they differentiate, in which precision, compiled or not.

Crafting is only the search for adversarial examples; whether an example fools the model is always
decided by the model itself in fp32 (``robust_correct``), so these settings can only make an
attack weaker or stronger, never make a prediction look right that is wrong.

- ``fold_batchnorm`` (default on): differentiate a verified BatchNorm-folded copy
  (:mod:`robustbench_cnn.models.fold`); 1.3-1.8x faster PGD steps on CPU.
- ``precision="bf16"``: run the forward and backward under ``torch.autocast`` in bfloat16; fast on
  GPUs and on CPUs with AVX512-BF16/AMX, emulated (slower) elsewhere. The runner then reports
  ``clean_acc_bf16`` and ``bf16_agreement`` rows so that the precision's effect is visible.
- ``compile``: ``torch.compile`` (inductor) the differentiated model; costs tens of seconds per
  model and input shape, pays off for long attack runs (e.g. AutoAttack on a large eval set).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import nn

from robustbench_cnn.models.fold import folded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Crafting:
    fold_batchnorm: bool = True
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"crafting precision '{self.precision}' is not fp32 or bf16")


DEFAULT_CRAFTING = Crafting()


class Autocast(nn.Module):
    """``model`` under ``torch.autocast(dtype)``; logits ``(N, K)`` returned in fp32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x).float()


def bf16_native(device: torch.device) -> bool:
    """Whether bfloat16 matmuls/convs run natively (not emulated) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def crafting_model(
    model: nn.Module, crafting: Crafting, probe: torch.Tensor, labels: torch.Tensor, device: torch.device | str
) -> nn.Module:
    """The module an attack differentiates for ``model`` (eval mode) under ``crafting``.

    ``probe``/``labels``: a few images ``(N, C, H, W)`` in [0, 1] and their labels on ``device``,
    against which a folded copy is verified. The fold is cached per model; a compiled module is
    not, so callers that attack one model many times build this once (the runner does, per model).
    """
    attacker = folded(model, probe, labels) if crafting.fold_batchnorm else model
    if crafting.precision == "bf16":
        if not bf16_native(torch.device(device)):
            log.warning("bf16 crafting on %s without native bfloat16 support is emulated and slower", device)
        attacker = Autocast(attacker).eval()
    if crafting.compile:
        attacker = cast(nn.Module, torch.compile(attacker))  # an OptimizedModule; typed as a callable
    return attacker


@contextmanager
def autotune_if(repeating: bool) -> Iterator[None]:
    """cuDNN autotuning, where the run turned it on (``torch.backends.cudnn.benchmark``), only for
    work whose input shape ``repeating`` says comes back: timing the candidate kernels costs seconds
    per new shape on a GPU (2.6 s for MobileNetV2 on an H100), which only a repeated shape repays.
    Other shapes use cuDNN's heuristics. The setting is restored on exit."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = saved and repeating
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved
