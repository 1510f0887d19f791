"""A strong, named attack ensemble: the per-example worst case over complementary attacks.

In the spirit of AutoAttack's standard version (Croce & Hein 2020): APGD on cross-entropy, APGD on
the targeted DLR loss against the ``targets`` most likely wrong classes (the scale-invariant loss
that defeats logit scaling), and PGD on the Carlini-Wagner margin (Carlini & Wagner 2017), each
with restarts. Members run in order, each only on the images that every earlier member failed to
flip (as AutoAttack does), so a weak model costs about one member and a robust one all of them.
DLR needs >= 3 classes: with fewer, its members are skipped (the pre-flight check flags the model).

Tensor contract: images ``(N, C, H, W)`` in [0, 1] and labels ``(N,)`` on the model's device; the
result has the images' shape, inside the eps ball and [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torchattacks
from torch import nn
from torchattacks.attack import Attack

from robustbench_cnn.attacks import register_attack
from robustbench_cnn.attacks.builtin import default_step_size
from robustbench_cnn.attacks.margin import MarginPGD

log = logging.getLogger(__name__)

MEMBERS = ("apgd_ce", "apgd_dlr", "apgd_t", "cw_pgd")
DEFAULT_MEMBERS = ("apgd_ce", "apgd_t", "cw_pgd")
NEEDS_THREE_CLASSES = frozenset({"apgd_dlr", "apgd_t"})
_TA_NORM = {"linf": "Linf", "l2": "L2"}


class Ensemble(Attack):
    """Run ``members`` (``(name, attack, repeats)``) in order on the still-correct images; an image
    keeps the first adversarial example that flips the prediction, else the last one tried."""

    def __init__(self, model: nn.Module, members: Sequence[tuple[str, Attack, int]]) -> None:
        super().__init__("Ensemble", model)
        self.members = tuple(members)
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x, y = images.clone().detach(), labels.clone().detach()
        adv = x.clone()
        live = torch.arange(len(x), device=x.device)
        for _, attack, repeats in self.members:
            for _ in range(repeats):
                if len(live) == 0:
                    return adv
                x_adv = attack(x[live], y[live]).detach()
                with torch.no_grad():
                    fooled = self.get_logits(x_adv).argmax(1) != y[live]
                adv[live] = x_adv
                live = live[~fooled]
        return adv


def member(
    name: str, model: nn.Module, eps: float, norm: str, steps: int, step_size: float | None, num_classes: int,
    restarts: int, targets: int,
) -> tuple[str, Attack, int]:  # fmt: skip
    """One ensemble member ``(name, attack, repeats)``; APGD restarts internally (its own seeds)."""
    if name == "apgd_ce":
        return name, torchattacks.APGD(model, norm=_TA_NORM[norm], eps=eps, steps=steps, n_restarts=restarts), 1
    if name == "apgd_dlr":
        attack = torchattacks.APGD(model, norm=_TA_NORM[norm], eps=eps, steps=steps, n_restarts=restarts, loss="dlr")
        return name, attack, 1
    if name == "apgd_t":
        attack = torchattacks.APGDT(model, norm=_TA_NORM[norm], eps=eps, steps=steps, n_restarts=restarts,
                                    n_classes=num_classes)  # fmt: skip
        attack.n_target_classes = max(1, min(targets, num_classes - 1))
        return name, attack, 1
    if name == "cw_pgd":
        alpha = default_step_size(eps, steps, step_size)
        return name, MarginPGD(model, eps=eps, alpha=alpha, steps=steps, norm=norm), restarts
    raise ValueError(f"unknown ensemble member '{name}'; expected one of {', '.join(MEMBERS)}")


@register_attack("ensemble", norms=("linf", "l2"))
def ensemble(
    model: nn.Module,
    eps: float,
    norm: str = "linf",
    steps: int = 50,
    step_size: float | None = None,
    num_classes: int = 10,
    restarts: int = 2,
    members: tuple[str, ...] = DEFAULT_MEMBERS,
    targets: int = 3,
) -> Ensemble:
    """The ensemble above: each member runs ``steps`` iterations with ``restarts`` restarts;
    ``apgd_t`` targets the ``targets`` most likely wrong classes; ``step_size`` is CW-PGD's."""
    chosen = [m for m in members if num_classes >= 3 or m not in NEEDS_THREE_CLASSES]
    if len(chosen) < len(members):
        log.warning("ensemble: %d classes, DLR members skipped (they need >= 3 classes)", num_classes)
    return Ensemble(
        model, [member(m, model, eps, norm, steps, step_size, num_classes, restarts, targets) for m in chosen]
    )
