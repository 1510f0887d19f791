"""Defensive distillation (Papernot et al. 2016), the textbook case of gradient masking.

A teacher of the same architecture is trained with its logits divided by ``temperature``; the
student learns the teacher's soft labels at the same temperature and is deployed at T = 1, so its
softmax saturates and cross-entropy gradients vanish (Carlini & Wagner 2017 broke it with a margin
loss). It is here so the sanity checks and margin/DLR attacks have something real to expose.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from robustbench_cnn.config.spec import DefenseSpec, TrainSpec
from robustbench_cnn.config.spec_types import MAX_TEMPERATURE
from robustbench_cnn.defenses import register_defense
from robustbench_cnn.train.loop import train


class DistillationSpec(DefenseSpec):
    """Teacher and student trained at ``temperature``; student deployed at T = 1."""

    temperature: float = Field(20.0, ge=1, le=MAX_TEMPERATURE)


@register_defense("distillation", DistillationSpec)
def distillation(
    model, x, y, recipe: TrainSpec, spec: DistillationSpec, seed: int, device, desc="distill", progress=True
):
    """Defensive distillation: teacher on hard labels at T, student on the teacher's soft labels at T.

    Both losses are scaled by T^2 (Hinton et al. 2015) so that gradients keep their magnitude while
    the logits grow to T times their usual scale, which is what saturates the deployed softmax.
    """
    t = spec.temperature
    teacher = copy.deepcopy(model)  # same architecture and initial weights as the student

    def teacher_loss(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor):
        logits = net(xb)
        return t * t * F.cross_entropy(logits / t, yb), logits

    train(teacher, x, y, recipe, seed + 1, device, f"{desc} teacher", progress, loss_fn=teacher_loss)
    teacher.eval()

    def student_loss(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor):
        with torch.no_grad():
            soft = F.softmax(teacher(xb) / t, dim=1)
        logits = net(xb)
        return t * t * F.cross_entropy(logits / t, soft), logits

    return train(model, x, y, recipe, seed, device, f"{desc} student", progress, loss_fn=student_loss)
