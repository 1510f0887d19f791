"""The headline worst case (the smoke suite's attacks and its ``[ensemble]`` settings) is converged:
at every budget it is no weaker than a 100-step, 5-restart PGD on cross-entropy and on the CW margin
(+1 point)."""

from functools import partial
from pathlib import Path

import pytest
import torch

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.config.load import load_suite

SMOKE = Path(__file__).resolve().parent.parent / "suites" / "smoke.toml"

N = 32  # images: a budget takes ~10 s on one core (the 100-step, 5-restart reference dominates)
BUDGETS = [
    ("linf", 0.1),
    *(pytest.param(norm, eps, marks=pytest.mark.slow) for norm, eps in [("linf", 0.05), ("linf", 0.2), ("l2", 0.5),
                                                                         ("l2", 1.0)]),
]  # fmt: skip
SUITE_ATTACKS = {"linf": (("fgsm", 1), ("pgd", 20)), "l2": (("pgd", 10),)}  # the smoke suite's, per norm


def survivors(model, x, y, clean, attack, norm, eps, steps, runs=1, **kwargs):
    """Per-example robust mask of ``attack`` with ``runs`` restarts (``kwargs`` go to its factory)."""
    make = partial(ATTACKS.get(attack), eps=eps, norm=norm, steps=steps, step_size=None, num_classes=10, **kwargs)
    return robust_correct(model, make, x, y, clean, eps, norm, restarts=runs, seed=1, progress=False)


@pytest.mark.parametrize(("norm", "eps"), BUDGETS)
def test_worst_case_is_no_weaker_than_long_pgd(tiny_model, digits, norm, eps):
    x, y = digits.x_eval[:N], digits.y_eval[:N]
    with torch.no_grad():
        clean = tiny_model(x).argmax(1) == y
    ens = load_suite(SMOKE).spec.ensemble  # the smoke suite's settings
    worst = survivors(tiny_model, x, y, clean, "ensemble", norm, eps, ens.steps, members=ens.members,
                      restarts=ens.restarts, targets=ens.targets)  # fmt: skip
    for attack, steps in SUITE_ATTACKS[norm]:
        worst &= survivors(tiny_model, x, y, clean, attack, norm, eps, steps)
    strong = survivors(tiny_model, x, y, clean, "pgd", norm, eps, 100, runs=5)
    strong &= survivors(tiny_model, x, y, clean, "cw_pgd", norm, eps, 100, runs=5)
    headline, reference = float(worst.float().mean()), float(strong.float().mean())
    assert headline <= reference + 0.01, (headline, reference)
