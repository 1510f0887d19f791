"""Defenses: training-time recipes that change what a model learns, registered by name.

A defense is a training function with the signature
``fn(model, x, y, recipe, spec, seed, device, desc, progress) -> TrainLog`` and a ``spec``
attribute: the frozen class of its hyper-parameters (all with defaults). Suites select one per
model::

    [models.defense]
    name = "pgd_at"
    eps = 0.1
"""

from __future__ import annotations

from collections.abc import Callable

from robustbench_cnn.registry import Registry

DEFENSES: Registry = Registry(
    "defense",
    ("robustbench_cnn.defenses.adversarial", "robustbench_cnn.defenses.noise", "robustbench_cnn.defenses.distillation"),
)


def register_defense(name: str, spec: type) -> Callable:
    """Register a defense's training function under ``name`` with its spec class."""

    def decorator(fn: Callable) -> Callable:
        fn.spec = spec  # type: ignore[attr-defined]
        return DEFENSES.register(name)(fn)

    return decorator


__all__ = ["DEFENSES", "register_defense"]
