"""Adversarial training: PGD-AT (Madry et al. 2018), FGSM-RS "fast" AT (Wong et al. 2020), TRADES.

Threat model: Linf (or L2 for PGD-AT) perturbations of radius ``eps`` on images in [0, 1].
Training examples are crafted with torchattacks with the model in eval mode, so the attack's
forward passes do not update BatchNorm statistics; ``bn_train_during_attack = true`` restores the
original papers' train-mode crafting.
"""

from __future__ import annotations

import copy
import logging
from typing import Literal

import torch
import torch.nn.functional as F
import torchattacks
from pydantic import Field
from torch import nn

from robustbench_cnn.config.spec import DefenseSpec, Number, TrainSpec
from robustbench_cnn.config.spec_types import MAX_IMAGES, MAX_LOSS_WEIGHT, MAX_STEP_SIZE, MAX_STEPS
from robustbench_cnn.defenses import register_defense
from robustbench_cnn.train.loop import TrainLog, to_device, train

log = logging.getLogger(__name__)


class PgdAtSpec(DefenseSpec):
    """Madry et al. 2018: minimise the loss on PGD-``steps`` examples."""

    eps: Number = Field(8 / 255, ge=0, le=1)
    norm: Literal["linf", "l2"] = "linf"
    steps: int = Field(7, ge=1, le=MAX_STEPS)
    step_size: Number | None = Field(None, gt=0, le=MAX_STEP_SIZE, description="default 2.5 * eps / steps")
    bn_train_during_attack: bool = False


class FgsmRsSpec(DefenseSpec):
    """Wong et al. 2020: uniform random start, one FGSM step of ``step_factor * eps``, early stop."""

    eps: Number = Field(8 / 255, ge=0, le=1)
    step_factor: float = Field(1.25, gt=0, le=MAX_STEP_SIZE)
    early_stop: bool = Field(True, description="stop and roll back on catastrophic overfitting")
    check_size: int = Field(256, ge=16, le=MAX_IMAGES, description="training images PGD-checked after each epoch")
    bn_train_during_attack: bool = False


class TradesSpec(DefenseSpec):
    """Zhang et al. 2019: CE(clean) + beta * KL(f(x_adv) || f(x)), x_adv maximising the KL term."""

    eps: Number = Field(8 / 255, ge=0, le=1)
    steps: int = Field(5, ge=1, le=MAX_STEPS)
    step_size: Number | None = Field(None, gt=0, le=MAX_STEP_SIZE, description="default 2.5 * eps / steps")
    beta: float = Field(6.0, ge=0, le=MAX_LOSS_WEIGHT)


def _crafting(attack: torchattacks.Attack, bn_train: bool) -> torchattacks.Attack:
    if bn_train:
        attack.set_model_training_mode(model_training=True, batchnorm_training=True, dropout_training=False)
    return attack


def _alpha(eps: float, steps: int, step_size: float | None) -> float:
    return step_size if step_size is not None else 2.5 * eps / steps


def _adversarial_ce(attack: torchattacks.Attack):
    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x_adv = attack(x, y)  # torchattacks switches to eval mode and back to train mode
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits

    return loss_fn


@register_defense("pgd_at", PgdAtSpec)
def pgd_at(model, x, y, recipe: TrainSpec, spec: PgdAtSpec, seed: int, device, desc="pgd_at", progress=True):
    """PGD adversarial training (Madry et al. 2018)."""
    to_device(model, device)  # before the attack records the model's device
    alpha = _alpha(spec.eps, spec.steps, spec.step_size)
    cls = torchattacks.PGDL2 if spec.norm == "l2" else torchattacks.PGD
    attack = _crafting(
        cls(model, eps=spec.eps, alpha=alpha, steps=spec.steps, random_start=True), spec.bn_train_during_attack
    )
    return train(model, x, y, recipe, seed, device, desc, progress, loss_fn=_adversarial_ce(attack))


class CatastrophicOverfittingGuard:
    """Wong et al. 2020's early stop: after each epoch, PGD-accuracy on a fixed training batch;
    if it falls by more than ``drop`` below the best seen, restore the best weights and stop."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, eps: float, device, drop: float = 0.2) -> None:
        self.x, self.y, self.eps, self.device, self.drop = x.to(device), y.to(device), eps, device, drop
        self.best_acc = -1.0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stopped_at: int | None = None

    def pgd_accuracy(self, model: nn.Module) -> float:
        model.eval()
        attack = torchattacks.PGD(model, eps=self.eps, alpha=self.eps / 4, steps=10, random_start=True)
        x_adv = attack(self.x, self.y)
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == self.y).float().mean())

    def __call__(self, model: nn.Module, epoch: int) -> bool:
        acc = self.pgd_accuracy(model)
        if acc > self.best_acc:
            self.best_acc, self.best_state = acc, copy.deepcopy(model.state_dict())
            return False
        if acc < self.best_acc - self.drop and self.best_state is not None:  # a best is kept from the first epoch
            log.warning("catastrophic overfitting at epoch %d: PGD acc %.3f < best %.3f", epoch + 1, acc, self.best_acc)
            model.load_state_dict(self.best_state)
            self.stopped_at = epoch + 1
            return True
        return False


@register_defense("fgsm_rs", FgsmRsSpec)
def fgsm_rs(model, x, y, recipe: TrainSpec, spec: FgsmRsSpec, seed: int, device, desc="fgsm_rs", progress=True):
    """ "Fast is better than free" FGSM with random start (Wong et al. 2020); use a one-cycle LR."""
    to_device(model, device)  # before the attack records the model's device
    attack = torchattacks.FFGSM(model, eps=spec.eps, alpha=spec.step_factor * spec.eps)
    attack = _crafting(attack, spec.bn_train_during_attack)
    n = min(spec.check_size, len(y))
    guard = CatastrophicOverfittingGuard(x[:n], y[:n], spec.eps, device) if spec.early_stop else None
    return train(model, x, y, recipe, seed, device, desc, progress, loss_fn=_adversarial_ce(attack), on_epoch_end=guard)


@register_defense("trades", TradesSpec)
def trades(
    model, x, y, recipe: TrainSpec, spec: TradesSpec, seed: int, device, desc="trades", progress=True
) -> TrainLog:
    """TRADES (Zhang et al. 2019); examples crafted by torchattacks' TPGD (the KL inner maximisation)."""
    to_device(model, device)  # before the attack records the model's device
    attack = torchattacks.TPGD(
        model, eps=spec.eps, alpha=_alpha(spec.eps, spec.steps, spec.step_size), steps=spec.steps
    )

    def loss_fn(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor):
        x_adv = attack(xb, yb)
        logits = model(xb)
        kl = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
        return F.cross_entropy(logits, yb) + spec.beta * kl, logits

    return train(model, x, y, recipe, seed, device, desc, progress, loss_fn=loss_fn)
