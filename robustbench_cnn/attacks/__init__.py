"""Adversarial attacks, registered by name; the implementations come from torchattacks.

An attack factory has the signature
``fn(model, eps, norm, steps, step_size, num_classes) -> torchattacks.Attack`` and carries a
``norms`` attribute naming the threat models it supports. Threat model: white-box, untargeted,
perturbations bounded by ``eps`` in the given norm on images in [0, 1].
"""

from collections.abc import Callable
from enum import StrEnum

from robustbench_cnn.registry import Registry

ATTACKS: Registry = Registry(
    "attack", ("robustbench_cnn.attacks.builtin", "robustbench_cnn.attacks.margin", "robustbench_cnn.attacks.ensemble")
)


class Norm(StrEnum):
    """The threat models: an Linf or an L2 ball of radius eps around an image in [0, 1]."""

    LINF = "linf"
    L2 = "l2"


def register_attack(name: str, norms: tuple[str, ...]) -> Callable:
    """Register an attack factory under ``name`` for the threat models in ``norms``."""

    def decorator(fn: Callable) -> Callable:
        fn.norms = norms  # type: ignore[attr-defined]
        return ATTACKS.register(name)(fn)

    return decorator


__all__ = ["ATTACKS", "Norm", "register_attack"]
