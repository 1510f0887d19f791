"""Knowledge distillation of a teacher into a (usually smaller) student.

Hinton et al. 2015: the student minimises ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) *
CE(student, y)``, where ``_T`` is the softmax at temperature ``T`` (the T^2 keeps the soft term's
gradients at the hard term's scale). With ``adversarial = true`` it is Adversarially Robust
Distillation (ARD, Goldblum et al. 2020): the soft term compares the student on PGD examples crafted
against itself (Linf ``eps``) with the teacher on the clean image, so a robust teacher passes its
robustness on. The student is deployed at T = 1.

Tensor contract: images ``(N, C, H, W)`` in [0, 1]; teacher and student output logits ``(N, K)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchattacks
from pydantic import Field
from torch import nn

from robustbench_cnn.compress import CompressJob, register_compressor
from robustbench_cnn.config.spec import CompressSpec, Number
from robustbench_cnn.config.spec_types import MAX_STEPS, MAX_TEMPERATURE
from robustbench_cnn.train.loop import TrainLog, to_device


class DistillSpec(CompressSpec):
    """Train this model (the student) on ``teacher``'s soft labels; the entry's ``train`` is the recipe."""

    accepts_defense = False

    teacher: str = Field(min_length=1, description="a model defined earlier in the suite file")
    temperature: float = Field(4.0, ge=1, le=MAX_TEMPERATURE)
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft (teacher) term")
    adversarial: bool = Field(False, description="ARD: the soft term on the student's PGD examples")
    eps: Number = Field(8 / 255, ge=0, le=1, description="ARD's Linf radius")
    steps: int = Field(5, ge=1, le=MAX_STEPS, description="ARD's PGD steps")

    @property
    def upstream(self) -> tuple[str, ...]:
        return (self.teacher,)

    @property
    def label(self) -> str:
        return f"{'ard' if self.adversarial else 'kd'}({self.teacher},T={self.temperature:g})"


def kd_loss(soft_logits, hard_logits, teacher_logits, y, temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || soft_T) + (1 - alpha) * CE(hard, y)``: Hinton et al.'s loss when
    ``soft_logits`` and ``hard_logits`` are the student's on the same images (ARD: on adversarial and
    clean images); with ``alpha = 0`` it is plain cross-entropy."""
    t = temperature
    soft = F.kl_div(F.log_softmax(soft_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True)  # fmt: skip
    return alpha * t * t * soft + (1 - alpha) * F.cross_entropy(hard_logits, y)


@register_compressor("distill", DistillSpec)
def distill(model: nn.Module, spec: DistillSpec, job: CompressJob) -> TrainLog:
    """Train ``model`` from its initial weights as the teacher's student."""
    teacher = job.upstream[spec.teacher].eval()
    attack = None
    if spec.adversarial:
        to_device(model, job.device)  # before the attack records the model's device
        attack = torchattacks.PGD(model, eps=spec.eps, alpha=2.5 * spec.eps / spec.steps, steps=spec.steps)

    def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor):
        with torch.no_grad():
            teacher_logits = teacher(x)
        logits = net(x)
        # ARD: torchattacks crafts in eval mode and restores train mode
        soft_logits = logits if attack is None else net(attack(x, y))
        return kd_loss(soft_logits, logits, teacher_logits, y, spec.temperature, spec.alpha), logits

    return job.finetune(model, loss_fn)
