"""PGD on the Carlini-Wagner margin loss (Carlini & Wagner 2017), as a torchattacks attack.

The margin ``max_{j != y} z_j - z_y`` is invariant to a softmax temperature, so it keeps a useful
gradient where cross-entropy saturates (e.g. defensive distillation deployed at T = 1).
"""

from __future__ import annotations

import torch
from torchattacks.attack import Attack

from robustbench_cnn.attacks import register_attack
from robustbench_cnn.attacks.builtin import default_step_size


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example ``max_{j != y} z_j - z_y`` (> 0 means misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


class MarginPGD(Attack):
    """Linf or L2 PGD with a random start that ascends the CW margin loss."""

    def __init__(self, model, eps: float, alpha: float, steps: int, norm: str = "linf") -> None:
        super().__init__("MarginPGD", model)
        self.eps, self.alpha, self.steps, self.norm = eps, alpha, steps, norm
        self.supported_mode = ["default"]

    def _project(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * (self.eps / norms).clamp(max=1.0).view(-1, 1, 1, 1)
        return (x + delta).clamp(0, 1)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = images.clone().detach().to(self.device)
        y = labels.clone().detach().to(self.device)
        if self.norm == "linf":
            start = torch.empty_like(x).uniform_(-self.eps, self.eps)
        else:
            start = torch.randn_like(x)
            start *= (
                self.eps * torch.rand(len(x), 1, 1, 1, device=x.device) / start.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            )
        x_adv = self._project(x, x + start).detach()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            grad = torch.autograd.grad(margin_loss(self.get_logits(x_adv), y).sum(), x_adv)[0]
            if self.norm == "linf":
                step = grad.sign()
            else:
                step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x_adv = self._project(x, x_adv.detach() + self.alpha * step).detach()
        return x_adv


@register_attack("cw_pgd", norms=("linf", "l2"))
def cw_pgd(model, eps: float, norm: str = "linf", steps: int = 10, step_size=None, num_classes: int = 10):
    """PGD on the CW margin loss (Carlini & Wagner 2017) with a random start; Linf or L2."""
    return MarginPGD(model, eps=eps, alpha=default_step_size(eps, steps, step_size), steps=steps, norm=norm)
