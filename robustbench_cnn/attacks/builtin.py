"""Built-in attacks: thin, typed constructors around torchattacks 3.5.

All take a model that maps images in [0, 1] to logits, so no normalization is configured on the
torchattacks side. ``step_size`` defaults to ``2.5 * eps / steps`` (Madry et al. 2018).
"""

from __future__ import annotations

import torch
import torchattacks
from torch import nn

from robustbench_cnn.attacks import register_attack
from robustbench_cnn.errors import AttackContractError

_TA_NORM = {"linf": "Linf", "l2": "L2"}


def default_step_size(eps: float, steps: int, step_size: float | None) -> float:
    return step_size if step_size is not None else 2.5 * eps / steps


@register_attack("fgsm", norms=("linf",))
def fgsm(model: nn.Module, eps: float, norm: str = "linf", steps: int = 1, step_size=None, num_classes: int = 10):
    """FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps."""
    return torchattacks.FGSM(model, eps=eps)


@register_attack("pgd", norms=("linf", "l2"))
def pgd(model: nn.Module, eps: float, norm: str = "linf", steps: int = 10, step_size=None, num_classes: int = 10):
    """PGD with a random start (Madry et al. 2018), cross-entropy loss, Linf or L2 ball."""
    alpha = default_step_size(eps, steps, step_size)
    if norm == "l2":
        return torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)


@register_attack("bim", norms=("linf",))
def bim(model: nn.Module, eps: float, norm: str = "linf", steps: int = 10, step_size=None, num_classes: int = 10):
    """BIM / I-FGSM (Kurakin et al. 2017): PGD from the clean image (no random start), cross-entropy;
    the protocol of advertorch's ``LinfPGDAttack(rand_init=False)`` benchmarks."""
    return torchattacks.BIM(model, eps=eps, alpha=default_step_size(eps, steps, step_size), steps=steps)


@register_attack("apgd_ce", norms=("linf", "l2"))
def apgd_ce(model: nn.Module, eps: float, norm: str = "linf", steps: int = 10, step_size=None, num_classes: int = 10):
    """APGD with cross-entropy loss (Croce & Hein 2020): step-size-free PGD with momentum."""
    return torchattacks.APGD(model, norm=_TA_NORM[norm], eps=eps, steps=steps, loss="ce")


@register_attack("apgd_dlr", norms=("linf", "l2"))
def apgd_dlr(model: nn.Module, eps: float, norm: str = "linf", steps: int = 10, step_size=None, num_classes: int = 10):
    """APGD with the scale-invariant DLR loss (Croce & Hein 2020); needs >= 3 classes."""
    if num_classes < 3:
        raise AttackContractError(f"apgd_dlr needs >= 3 classes (the DLR loss), the model has {num_classes}")
    return torchattacks.APGD(model, norm=_TA_NORM[norm], eps=eps, steps=steps, loss="dlr")


@register_attack("square", norms=("linf", "l2"))
def square(model: nn.Module, eps: float, norm: str = "linf", steps: int = 100, step_size=None, num_classes: int = 10):
    """Square Attack (Andriushchenko et al. 2020): score-based black-box; ``steps`` = queries."""
    return torchattacks.Square(model, norm=_TA_NORM[norm], eps=eps, n_queries=steps)


@register_attack("autoattack", norms=("linf", "l2"))
def autoattack(
    model: nn.Module, eps: float, norm: str = "linf", steps: int = 100, step_size=None, num_classes: int = 10
):
    """AutoAttack, standard version (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square. Seeded from
    torch's global seed (which the caller sets per batch): torchattacks would seed it with the time."""
    seed = torch.initial_seed() % 2**31
    return torchattacks.AutoAttack(
        model, norm=_TA_NORM[norm], eps=eps, version="standard", n_classes=num_classes, seed=seed
    )
