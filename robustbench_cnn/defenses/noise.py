"""Gaussian data augmentation (Cohen et al. 2019), the base classifier of randomized smoothing.

Threat model of the smoothed classifier: L2 perturbations; its certified radius is
``sigma * Phi^-1(p_A)`` (see :mod:`robustbench_cnn.defenses.smoothing`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from robustbench_cnn.config.spec import DefenseSpec, TrainSpec
from robustbench_cnn.defenses import register_defense
from robustbench_cnn.train.loop import train


class GaussianSpec(DefenseSpec):
    """Train on ``x + N(0, sigma^2 I)``; certify with the same sigma."""

    sigma: float = Field(0.25, gt=0, le=2)


@register_defense("gaussian", GaussianSpec)
def gaussian(model, x, y, recipe: TrainSpec, spec: GaussianSpec, seed: int, device, desc="gaussian", progress=True):
    """Gaussian noise augmentation at sigma (Cohen et al. 2019); noise is not clipped to [0, 1]."""

    def loss_fn(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor):
        logits = model(xb + spec.sigma * torch.randn_like(xb))
        return F.cross_entropy(logits, yb), logits

    return train(model, x, y, recipe, seed, device, desc, progress, loss_fn=loss_fn)
