"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): PREDICT and CERTIFY.

The smoothed classifier is ``g(x) = argmax_c P(f(x + e) = c)``, ``e ~ N(0, sigma^2 I)``. CERTIFY
picks the top class from ``n0`` noise samples, estimates a one-sided Clopper-Pearson lower bound
``p_A`` on its probability from ``n`` fresh samples, and certifies an L2 radius
``sigma * Phi^-1(p_A)`` if ``p_A > 1/2`` (else abstains). Input ``x``: one image ``(C, H, W)`` in
[0, 1]; noise is drawn on ``x``'s device from a seeded ``torch.Generator`` in batches.

The noisy batches run through a BatchNorm-folded, channels_last copy of the base model under
``torch.inference_mode``, or, with ``runtime="onnxruntime"`` (CPU), through an ONNX export of it on
ONNX Runtime: the same function up to float rounding, about twice as fast on the smoke models, and
identical class counts to torch on every image checked (20 images x 4,000 samples). On CPU,
``torch.randn`` fills a tensor in blocks of 16 values, so any batch of a multiple of 16 samples
draws exactly the noise that Cohen et al.'s batches of 400 draw.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from robustbench_cnn.attacks.crafting import Autocast
from robustbench_cnn.export.onnx import export_onnx
from robustbench_cnn.models.fold import folded
from robustbench_cnn.models.normalize import as_layout, layout
from robustbench_cnn.runtime.onnx_runtime import OrtModel

ABSTAIN = -1
log = logging.getLogger(__name__)


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion (k successes of n)."""
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def _ort_model(base: nn.Module, sample_shape: tuple[int, ...]) -> OrtModel | None:
    """``base`` exported to ONNX (fp32) behind an ONNX Runtime session (the file is not kept), or
    None with a warning when the export's batch dimension is fixed (e.g. a forward that calls
    ``len(x)`` specializes it): the caller then runs the noisy batches in torch."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        ort_model = OrtModel(export_onnx(base, sample_shape, Path(tmp) / "base.onnx"), threads=torch.get_num_threads())
    batch = ort_model.session.get_inputs()[0].shape[0]
    if isinstance(batch, int):
        log.warning("smoothing: the ONNX export has a fixed batch of %d (not dynamic); certifying in torch", batch)
        return None
    return ort_model


@dataclass(frozen=True)
class Certificate:
    label: int  # ABSTAIN (-1) or the certified class
    radius: float  # L2 radius; 0.0 when abstaining
    p_lower: float
    count: int = 0  # noise samples (of n) classified as the top class


class Smoothed:
    """``base``: logits model on [0, 1] images; ``sigma``: noise level it was trained with."""

    def __init__(
        self,
        base: nn.Module,
        num_classes: int,
        sigma: float,
        batch_size: int = 1024,
        runtime: str = "torch",
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        if runtime not in ("torch", "onnxruntime"):
            raise ValueError(f"runtime '{runtime}' is not torch or onnxruntime")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision '{precision}' is not fp32 or bf16")
        self.base, self.num_classes, self.sigma, self.batch_size = base.eval(), num_classes, sigma, batch_size
        self._layout = layout(base)  # the folded copy's too: folding keeps every conv's channels
        self.runtime, self.precision, self.compile = runtime, precision, compile
        self._fast: dict[tuple, nn.Module | OrtModel] = {}  # per shape/device: folded base, or ONNX Runtime model

    def verify_fast(self, x: torch.Tensor, num: int, seed: int, tolerance: float = 0.01) -> bool:
        """Check the bf16/compiled torch sampler against fp32 on image ``x``: the same ``num`` noisy
        copies (same seed) must give class counts within ``tolerance * num`` of each other. On a
        mismatch the sampler falls back to fp32 eager (a warning says so); returns whether it passed."""
        if self.precision == "fp32" and not self.compile:
            return True
        fast = self.sample_counts(x, num, torch.Generator(device=x.device).manual_seed(seed))
        wanted = (self.precision, self.compile)
        self.precision, self.compile = "fp32", False
        self._fast.clear()
        exact = self.sample_counts(x, num, torch.Generator(device=x.device).manual_seed(seed))
        diff = float((fast - exact).abs().max()) / num
        if diff <= tolerance:
            self.precision, self.compile = wanted
            self._fast.clear()
            return True
        log.warning("smoothing: %s/compile=%s counts differ from fp32 by %.3f of n on the probe; using fp32",
                    *wanted, diff)  # fmt: skip
        return False

    def sample_counts(self, x: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
        """Class counts ``(num_classes,)`` of the base classifier over ``num`` noisy copies of ``x``."""
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        buffer = torch.empty((min(self.batch_size, num), *x.shape), device=x.device)  # reused: no per-batch allocation
        with torch.inference_mode():
            remaining = num
            while remaining > 0:
                b = min(self.batch_size, remaining)
                noisy = torch.randn((b, *x.shape), generator=generator, device=x.device, out=buffer[:b])
                noisy.mul_(self.sigma).add_(x)  # x + sigma * e, broadcast, in place
                pred = self._classify(noisy)
                counts += torch.bincount(pred, minlength=self.num_classes)
                remaining -= b
        return counts

    def _classify(self, noisy: torch.Tensor) -> torch.Tensor:
        """Top-1 predictions ``(B,)`` of the base classifier on a noisy batch."""
        key = (tuple(noisy.shape[1:]), noisy.device)
        if key not in self._fast:
            ort = self.runtime == "onnxruntime" and noisy.device.type == "cpu"
            session = _ort_model(self.base, key[0]) if ort else None
            self._fast[key] = session if session is not None else self._torch_classifier(noisy[:8])
        fast = self._fast[key]
        if isinstance(fast, nn.Module):
            return fast(as_layout(noisy, self._layout)).argmax(1)
        return torch.from_numpy(fast.predict(noisy.numpy(), len(noisy)).argmax(1))

    def _torch_classifier(self, probe: torch.Tensor) -> nn.Module:
        """The folded base (checked on ``probe``), under bf16 autocast and/or compiled as asked."""

        module: nn.Module = folded(self.base, probe)
        if self.precision == "bf16":
            module = Autocast(module).eval()
        if self.compile:
            module = torch.compile(module)  # type: ignore[assignment]
        return module

    def predict(self, x: torch.Tensor, n: int, alpha: float, generator: torch.Generator) -> int:
        """Cohen et al.'s PREDICT: the top class, or ABSTAIN if a binomial test cannot separate it."""
        counts = self.sample_counts(x, n, generator)
        top2 = counts.topk(2)
        n_a, n_b = int(top2.values[0]), int(top2.values[1])
        if binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2.indices[0])

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, generator: torch.Generator) -> Certificate:
        """Cohen et al.'s CERTIFY; the radius holds with probability at least 1 - alpha."""
        top = int(self.sample_counts(x, n0, generator).argmax())
        n_a = int(self.sample_counts(x, n, generator)[top])
        p_lower = lower_confidence_bound(n_a, n, alpha)
        if p_lower <= 0.5:
            return Certificate(ABSTAIN, 0.0, p_lower, n_a)
        return Certificate(top, self.sigma * float(norm.ppf(p_lower)), p_lower, n_a)
