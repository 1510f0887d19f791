"""Evaluation sanity checks (Carlini et al. 2019, "On Evaluating Adversarial Robustness", sec. 4-5).

Each check turns a symptom of gradient masking or of a weak attack into pass/fail:

- ``pgd_vs_fgsm``: an iterative attack is at least as strong as a single step
  (PGD accuracy <= FGSM accuracy + tolerance);
- ``large_eps``: an unbounded-looking budget (Linf ``large_eps``, default 0.5) drives accuracy to ~0;
- ``more_steps``: ``more_steps_factor`` x the steps with ``more_restarts`` restarts, same step size,
  changes accuracy by at most the tolerance (a rise means an unstable model, a fall means the
  reported attack had not converged);
- ``transfer``: PGD examples crafted on a surrogate model do not beat the white-box attack;
- ``grad_norm``: input gradients of the loss do not vanish (exactly-zero gradients on at most
  ``max_vanishing`` of the correctly classified images).

A model that fails any check gets an "evaluation unreliable" flag in the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from robustbench_cnn.attacks.crafting import DEFAULT_CRAFTING, Crafting
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.attacks.margin import MarginPGD

CHECKS = ("pgd_vs_fgsm", "large_eps", "more_steps", "transfer", "grad_norm")


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


def _pgd(model, eps: float, steps: int, alpha: float):
    return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)


def input_gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm of d CE(model(x), y) / dx, in eval mode. ``(N,)``."""
    model.eval()
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad.flatten(1).norm(dim=1).detach()


def run_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    surrogate: nn.Module | None = None,
    steps: int = 10,
    more_steps_factor: int = 5,
    more_restarts: int = 3,
    large_eps: float = 0.5,
    large_eps_max_acc: float = 0.05,
    tolerance: float = 0.05,
    max_vanishing: float = 0.25,
    seed: int = 0,
    device: torch.device | str = "cpu",
    crafting: Crafting = DEFAULT_CRAFTING,
    attacker: nn.Module | None = None,
) -> list[CheckResult]:
    """Run every check on images ``x`` (N, C, H, W) in [0, 1] under a Linf budget ``eps``; the
    attacks craft as the reported ones do (``crafting``/``attacker``, see ``robust_correct``)."""
    model.eval()
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    alpha = eps / 4

    def acc(make, e=eps, restarts=1) -> float:
        ok = robust_correct(model, make, x, y, clean.cpu(), e, "linf", restarts=restarts, seed=seed, device=device,
                            progress=False, crafting=crafting, attacker=attacker)  # fmt: skip
        return float(ok.float().mean())

    results = []
    pgd = acc(partial(_pgd, eps=eps, steps=steps, alpha=alpha))
    fgsm = acc(partial(torchattacks.FGSM, eps=eps))
    results.append(CheckResult("pgd_vs_fgsm", pgd <= fgsm + tolerance, f"PGD {pgd:.3f} vs FGSM {fgsm:.3f}"))

    big = acc(partial(_pgd, eps=large_eps, steps=steps, alpha=large_eps / 4), e=large_eps)
    results.append(CheckResult("large_eps", big <= large_eps_max_acc, f"PGD at eps {large_eps:g}: {big:.3f}"))

    more = acc(partial(_pgd, eps=eps, steps=5 * steps, alpha=alpha), restarts=3)
    results.append(
        CheckResult(
            "more_steps", abs(more - pgd) <= tolerance, f"PGD-{steps} {pgd:.3f} vs PGD-{5 * steps}x3 {more:.3f}"
        )
    )

    if surrogate is not None:
        surrogate.eval()
        torch.manual_seed(seed)
        x_adv = MarginPGD(surrogate, eps=eps, alpha=alpha, steps=steps)(x, y)
        with torch.no_grad():
            transfer = float(((model(x_adv).argmax(1) == y) & clean).float().mean())
        results.append(
            CheckResult("transfer", transfer >= pgd - tolerance, f"transfer {transfer:.3f} vs white-box {pgd:.3f}")
        )

    norms = input_gradient_norms(model, x[clean], y[clean]) if clean.any() else torch.ones(1)
    vanishing = float((norms < 1e-10).float().mean())
    results.append(
        CheckResult(
            "grad_norm", vanishing <= max_vanishing, f"{vanishing:.0%} zero gradients, median {norms.median():.3g}"
        )
    )
    return results
