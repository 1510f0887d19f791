"""A score-based black-box attack run on the deployed artefact itself (ONNX Runtime, LiteRT, ...).

Transfer rows tell how the examples crafted on the float model fare on the export; this tells how
robust the export is to an attacker who only queries it: Square Attack (Andriushchenko et al.
2020, torchattacks' implementation), which needs logits only, never gradients, so it runs against
any runtime. Threat model as everywhere: Linf ball of radius ``eps`` on [0, 1] images, untargeted,
only clean-correct images attacked; every adversarial batch is checked to stay in the ball.

Tensor contract: ``deployed.predict(images: float32 (N, C, H, W) in [0, 1]) -> float32 logits (N, K)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torchattacks
from torch import nn

from robustbench_cnn.attacks.evaluate import check_perturbation
from robustbench_cnn.seeds import derived_seed

DIRECT_ATTACK = "square_direct"  # the attack column of these rows (transfer rows use the suite's attack names)


class RuntimeModule(nn.Module):
    """A deployed model as a gradient-free torch module on the CPU (for score-based attacks)."""

    def __init__(self, deployed, batch_size: int) -> None:
        super().__init__()
        self.deployed, self.batch_size = deployed, batch_size
        # torchattacks reads an attack's device from the model's first parameter (and prints to stdout
        # when there is none): a frozen scalar on the CPU, never used
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.deployed.predict(x.detach().cpu().numpy().astype(np.float32), self.batch_size)
        return torch.from_numpy(np.ascontiguousarray(logits))


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` within the block. Square Attack's own tensor work is
    tiny; torch's pool spinning beside the runtime's own pool is what costs (16-core GPU host, ONNX
    Runtime at 16 threads, 100 images x 100 queries: 5.3 s with torch at 16 threads, 0.18 s at 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def direct_robust(deployed, x: np.ndarray, y: np.ndarray, clean_correct: np.ndarray, eps: float, queries: int,
                  seed: int, batch_size: int = 256) -> np.ndarray:  # fmt: skip
    """Boolean ``(N,)``: clean-correct on the export and Square Attack (``queries`` per image) failed."""
    robust = clean_correct.copy()
    idx = np.flatnonzero(clean_correct)
    if eps == 0 or len(idx) == 0:
        return robust
    module = RuntimeModule(deployed, batch_size).eval()
    attack = torchattacks.Square(module, norm="Linf", eps=eps, n_queries=queries, seed=derived_seed(seed, eps) % 2**31)
    attack.set_device(torch.device("cpu"))
    with _torch_threads(2):
        for batch in np.array_split(idx, max(1, -(-len(idx) // batch_size))):
            xb, yb = torch.from_numpy(x[batch]), torch.from_numpy(y[batch]).long()
            x_adv = attack(xb, yb).detach()
            check_perturbation(xb, x_adv, eps, "linf")
            robust[batch] = module(x_adv).argmax(1).numpy() == y[batch]
    return robust
