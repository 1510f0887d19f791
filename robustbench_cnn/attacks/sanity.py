"""Evaluation sanity checks (Carlini et al. 2019, "On Evaluating Adversarial Robustness", sec. 4-5).

Each check turns a symptom of gradient masking or of a weak attack into pass/fail:

- ``pgd_vs_fgsm``: an iterative attack is at least as strong as a single step
  (PGD accuracy <= FGSM accuracy + tolerance);
- ``large_eps``: an unbounded-looking budget (Linf ``large_eps``, default 0.5) drives accuracy to ~0;
- ``more_steps``: the REPORTED attack (its own step size) is re-run with ``more_steps_factor`` x its
  steps and ``more_restarts`` restarts on the images it failed to flip; if that lowers robust
  accuracy by more than the tolerance, the reported attack had not converged. :func:`convergence`
  runs it for any attack at any (norm, eps); the runner does so at every evaluated budget;
- ``transfer``: PGD examples crafted on a surrogate model do not beat the white-box attack;
- ``grad_norm``: input gradients of the loss do not vanish (exactly-zero gradients on at most
  ``max_vanishing`` of the correctly classified images).

A model that fails any check gets an "evaluation unreliable" flag in the summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from robustbench_cnn.attacks.builtin import default_step_size, pgd
from robustbench_cnn.attacks.crafting import DEFAULT_CRAFTING, Crafting
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.attacks.margin import MarginPGD

CHECKS = ("pgd_vs_fgsm", "large_eps", "more_steps", "transfer", "grad_norm")
FIXED_BUDGET = frozenset({"fgsm", "autoattack"})  # attacks whose steps setting changes nothing: no more_steps


@dataclass(frozen=True)
class CheckResult:
    """One check; ``value`` is what it measured and ``reference`` what that was compared against."""

    name: str
    passed: bool
    detail: str
    value: float | None = None
    reference: float | None = None
    survivors: torch.Tensor | None = field(default=None, repr=False, compare=False)  # more_steps: per image


def convergence(
    model: nn.Module,
    make: Callable[[int], Callable],
    x: torch.Tensor,
    y: torch.Tensor,
    clean: torch.Tensor,
    eps: float,
    norm: str,
    steps: int,
    reported: torch.Tensor | None = None,
    restarts: int = 1,
    more_steps_factor: int = 5,
    more_restarts: int = 3,
    tolerance: float = 0.05,
    label: str = "PGD",
    **attack_kwargs: Any,
) -> CheckResult:
    """``more_steps`` for one attack at one budget: ``make(steps)`` builds the reported attack's
    factory (same step size at every step count), ``reported`` is its per-example robust mask on
    ``x`` (computed here, with ``restarts``, when not given). The stronger run (``more_steps_factor
    * steps`` steps, ``max(more_restarts, restarts)`` restarts) attacks the images the reported
    attack failed on, so its accuracy is the per-example minimum of both; it fails the check when it
    is lower by more than ``tolerance``. ``clean``: ``(N,)`` clean-correct mask; ``attack_kwargs``
    go to ``robust_correct``."""
    if reported is None:
        reported = robust_correct(model, make(steps), x, y, clean, eps, norm, restarts=restarts, **attack_kwargs)
    more_steps, more_runs = more_steps_factor * steps, max(more_restarts, restarts)
    stronger = robust_correct(model, make(more_steps), x, y, reported, eps, norm, restarts=more_runs, **attack_kwargs)
    base, more = float(reported.float().mean()), float(stronger.float().mean())
    detail = f"{label}-{steps}x{restarts} {base:.3f} vs {label}-{more_steps}x{more_runs} {more:.3f} ({norm} {eps:g})"
    return CheckResult("more_steps", base - more <= tolerance, detail, value=more, reference=base, survivors=stronger)


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
    step_size: float | None = None,
) -> list[CheckResult]:
    """Run every check on images ``x`` (N, C, H, W) in [0, 1] under a Linf budget ``eps``, with the
    reported Linf PGD: ``steps`` steps of ``step_size`` (default 2.5 * eps / steps, as reported);
    the attacks craft as the reported ones do (``crafting``/``attacker``, see ``robust_correct``)."""
    model.eval()
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).cpu()
    alpha = default_step_size(eps, steps, step_size)
    kwargs: dict[str, Any] = dict(seed=seed, device=device, progress=False, crafting=crafting, attacker=attacker)

    def pgd_at(e: float, alpha: float | None) -> Callable[[int], Callable]:
        return lambda n: partial(pgd, eps=e, norm="linf", steps=n, step_size=alpha)

    def acc(make, e=eps) -> tuple[torch.Tensor, float]:
        ok = robust_correct(model, make, x, y, clean, e, "linf", **kwargs)
        return ok, float(ok.float().mean())

    results = []
    pgd_ok, pgd_acc = acc(pgd_at(eps, alpha)(steps))
    fgsm = acc(partial(torchattacks.FGSM, eps=eps))[1]
    results.append(CheckResult("pgd_vs_fgsm", pgd_acc <= fgsm + tolerance, f"PGD {pgd_acc:.3f} vs FGSM {fgsm:.3f}",
                               pgd_acc, fgsm))  # fmt: skip

    big = acc(pgd_at(large_eps, None)(steps), e=large_eps)[1]
    results.append(CheckResult("large_eps", big <= large_eps_max_acc, f"PGD at eps {large_eps:g}: {big:.3f}", big))

    results.append(
        convergence(model, pgd_at(eps, alpha), x, y, clean, eps, "linf", steps, reported=pgd_ok,
                    more_steps_factor=more_steps_factor, more_restarts=more_restarts, tolerance=tolerance, **kwargs)
    )  # fmt: skip

    if surrogate is not None:
        results.append(transfer_check(model, surrogate, x, y, clean, eps, alpha, steps, pgd_acc, tolerance, seed))
    results.append(gradient_check(model, x, y, clean, max_vanishing))
    return results


def transfer_check(model: nn.Module, surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
                   eps: float, alpha: float, steps: int, white_box: float, tolerance: float = 0.05,
                   seed: int = 0) -> CheckResult:  # fmt: skip
    """Transfer from an undefended ``surrogate`` (CW-margin PGD, Linf ``eps``) must not beat the
    white-box attack (accuracy ``white_box``) by more than ``tolerance``: else the white-box
    gradients are masked (Carlini et al. 2019)."""
    surrogate.eval()
    torch.manual_seed(seed)
    x_adv = MarginPGD(surrogate, eps=eps, alpha=alpha, steps=steps)(x, y)
    with torch.no_grad():
        transfer = float(((model(x_adv).argmax(1) == y).cpu() & clean).float().mean())
    return CheckResult("transfer", transfer >= white_box - tolerance,
                       f"transfer {transfer:.3f} vs white-box {white_box:.3f}", transfer, white_box)  # fmt: skip


def gradient_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
                   max_vanishing: float = 0.25) -> CheckResult:  # fmt: skip
    """At most ``max_vanishing`` of the clean-correct images may have an all-zero input gradient
    (shattered or vanishing gradients, Athalye et al. 2018)."""
    on = clean.to(x.device)
    norms = input_gradient_norms(model, x[on], y[on]) if clean.any() else torch.ones(1)
    vanishing = float((norms < 1e-10).float().mean())
    return CheckResult("grad_norm", vanishing <= max_vanishing,
                       f"{vanishing:.0%} zero gradients, median {norms.median():.3g}", vanishing)  # fmt: skip
