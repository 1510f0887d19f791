"""Pre-flight checks before attacking a model, and EOT for randomized ones.

Three properties every gradient attack here assumes (cf. AutoAttack's ``checks.py``, Croce & Hein
2020) are verified on a few images before any attack runs:

- ``logits``: the model returns logits, not probabilities (rows in [0, 1] summing to 1); a
  softmax output saturates cross-entropy's gradient and overstates robustness;
- ``num_classes``: DLR-based attacks (``apgd_dlr``, ``apgd_t`` and the ensemble's DLR members,
  ``autoattack``) need >= 3 classes;
- randomness: two identical forward passes agree. A randomized model is attacked with EOT
  (Athalye et al. 2018, "Obfuscated Gradients Give a False Sense of Security"): the attack
  differentiates :class:`EOT`, the mean logits of ``samples`` forward passes, whose input gradient
  is the average of the samples' logit gradients; ``eot`` fails where it was asked to use fewer than 2.

Tensor contract: probe images ``(N, C, H, W)`` in [0, 1] on the model's device; logits ``(N, K)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from robustbench_cnn.attacks.crafting import Crafting, crafting_model
from robustbench_cnn.attacks.sanity import CheckResult

DLR_ATTACKS = frozenset({"apgd_dlr", "apgd_t", "autoattack", "ensemble"})
log = logging.getLogger(__name__)

RANDOM_ATOL = 1e-5  # logits of two identical passes may differ by float noise only


class EOT(nn.Module):
    """Expectation over transformation: ``model``'s mean logits over ``samples`` forward passes."""

    def __init__(self, model: nn.Module, samples: int = 8) -> None:
        super().__init__()
        self.model, self.samples = model, samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(0)


@torch.no_grad()
def is_randomized(model: nn.Module, probe: torch.Tensor) -> bool:
    """Whether two identical eval-mode forward passes on ``probe`` give different logits."""
    model.eval()
    first, second = model(probe), model(probe)
    return not torch.allclose(first, second, rtol=0.0, atol=RANDOM_ATOL)


def attacker_for(model: nn.Module, crafting: Crafting, probe: torch.Tensor, labels: torch.Tensor,
                 device: torch.device | str, eot_samples: int, name: str) -> nn.Module:  # fmt: skip
    """The module ``model``'s attacks craft on (:func:`~robustbench_cnn.attacks.crafting.crafting_model`,
    verified on ``probe``/``labels``), wrapped in :class:`EOT` over ``eot_samples`` passes if two
    identical forward passes on ``probe`` differ (Athalye et al. 2018); ``name`` heads the warning.
    A suite run (``measures.common.crafting_for``) and ``api.evaluate`` build it alike."""
    attacker = crafting_model(model.eval(), crafting, probe, labels, device)
    if is_randomized(model, probe):
        log.warning("%s: two identical forward passes differ; attacks use EOT over %d samples", name, eot_samples)
        attacker = EOT(attacker, eot_samples).eval()
    return attacker


def eot_check(randomized: bool, samples: int) -> CheckResult:
    """``eot``: a randomized model's attacks must differentiate an expectation (``samples`` >= 2 passes);
    one random pass per step is the single-sample gradient Athalye et al. show to overstate robustness."""
    if not randomized:
        return CheckResult("eot", True, "deterministic: no EOT needed", float(samples))
    if samples >= 2:
        return CheckResult("eot", True, f"randomized: attacked through EOT over {samples} passes", float(samples))
    return CheckResult("eot", False, f"randomized, but attacked through {samples} pass (no EOT): set "
                       "checks.eot_samples >= 2 (AutoAttack's rand version uses 20)", float(samples))  # fmt: skip


@torch.no_grad()
def preflight(model: nn.Module, probe: torch.Tensor, attacks: Iterable[str]) -> tuple[list[CheckResult], bool]:
    """``(check results, randomized)`` for ``model`` on ``probe``; ``attacks`` names those the suite
    runs (DLR-based ones need >= 3 classes)."""
    model.eval()
    logits = model(probe).float()
    in_unit = bool(((logits >= 0) & (logits <= 1)).all())
    sums_to_one = bool(torch.allclose(logits.sum(1), torch.ones(len(logits), device=logits.device), atol=1e-4))
    probabilities = in_unit and sums_to_one
    classes = logits.shape[1]
    dlr = sorted(set(attacks) & DLR_ATTACKS)
    results = [
        CheckResult("logits", not probabilities,
                    "outputs are probabilities (rows in [0, 1] sum to 1): return logits" if probabilities
                    else "outputs are logits"),
        CheckResult("num_classes", classes >= 3 or not dlr,
                    f"{classes} classes; {', '.join(dlr) or 'no DLR attack'} asked (DLR needs >= 3)", float(classes)),
    ]  # fmt: skip
    return results, is_randomized(model, probe)
