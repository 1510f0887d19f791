"""GPU pairs for ``benchmarks/perf.py --device cuda``: the runner's default CUDA path against the
plain code a user would write, same GPU, same process, interleaved (see ``perf.paired_times``).

- ``pgd_eval_cuda:<model>``: PGD-10 Linf 0.1 on 8,192 images at 32x32; baseline a torchattacks
  ``PGD`` loop at batch 256 (fp32, eager); ours ``robust_correct`` with the settings the runner
  resolves on this device (bf16 crafting where native, a BatchNorm-folded copy, memory-sized
  batches, cuDNN benchmark), the verdict still the model's own fp32 prediction.
- ``certify_cuda:<model>`` (and ``certify_cuda_bf16_compiled:<model>``): seconds per image at
  n = 100,000 noise samples; baseline Cohen et al.'s loop (batch 400, ``x.repeat``); ours the
  runner's sampler (batch 16,384, fp32; then the opt-in bf16 + compiled sampler, checked against
  fp32 on the probe as the runner does).

Targets (issue #11): PGD >= 5x on resnet20 and MobileNetV2; certification >= 8x on resnet20, >= 4x
on MobileNetV2. The models are untrained (random init): time per step does not depend on accuracy,
and every image is attacked by both sides.
"""

from __future__ import annotations

import sys
import time
from functools import partial

import torch
import torchattacks

from robustbench_cnn.attacks import ATTACKS
from robustbench_cnn.attacks.crafting import Crafting, bf16_native, crafting_model
from robustbench_cnn.attacks.evaluate import robust_correct
from robustbench_cnn.defenses.smoothing import Smoothed
from robustbench_cnn.engine.devices import CUDA_CERTIFY_BATCH, fitting_batch
from robustbench_cnn.models import build_model

GPU_MODELS = {"resnet20": ("resnet", {"depth": 20}), "mobilenet_v2": ("mobilenet_v2", {"width_mult": 1.0})}


_START = time.perf_counter()


def note(msg: str) -> None:
    """A progress line on stderr with the seconds since the start (long GPU pairs show where they are)."""
    print(f"[{time.perf_counter() - _START:7.1f} s] {msg}", file=sys.stderr, flush=True)


def _model(name: str, data, device: torch.device, ours: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    arch, params = GPU_MODELS[name]
    net = build_model(arch, 10, data.in_channels, data.mean, data.std, params).eval().to(device)
    return net.to(memory_format=torch.channels_last) if ours else net


def synced(fn, device: torch.device):
    """``fn`` followed by a device synchronization, so that a host timer measures the GPU's work."""

    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def bench_pgd_gpu(data, device, paired_times, row, repeats: int, images: int = 8192, steps: int = 10) -> list[dict]:
    """``data``: the digits set at 32x32; its eval images are tiled up to ``images``."""
    x = data.x_eval.repeat(-(-images // len(data.y_eval)), 1, 1, 1)[:images].to(device)
    y = data.y_eval.repeat(-(-images // len(data.y_eval)))[:images].to(device)
    everyone = torch.ones(images, dtype=torch.bool)
    eps, alpha, rows = 0.1, 0.025, []
    torch.backends.cudnn.benchmark = True
    for name in GPU_MODELS:
        net, our_net = _model(name, data, device, False), _model(name, data, device, True)

        def plain(net=net):
            attack = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=True)
            for xb, yb in zip(x.split(256), y.split(256), strict=True):
                adv = attack(xb, yb)
                with torch.no_grad():
                    net(adv).argmax(1)

        note(f"pgd {name}: sizing the batch")
        precision = "bf16" if bf16_native(device) else "fp32"
        attacker = crafting_model(our_net, Crafting(precision=precision), x[:8], y[:8], device)
        batch = fitting_batch(attacker, tuple(x.shape[1:]), device, 512)
        make = partial(ATTACKS.get("pgd"), eps=eps, norm="linf", steps=steps, step_size=alpha)
        ours = partial(robust_correct, our_net, make, x, y.cpu(), everyone, eps, "linf", batch_size=batch,
                       device=device, progress=False, attacker=attacker)  # fmt: skip
        note(f"pgd {name}: timing ours (batch {batch}) against the plain loop")
        t_ours, t_base, ratio = paired_times(synced(ours, device), synced(plain, device), repeats)
        work = images * steps
        rows.append(row(f"pgd_eval_cuda:{name}", work / t_ours, work / t_base,
                        f"image*steps/s (ours: {precision}, batch {batch})", ratio=ratio))  # fmt: skip
        note(f"{rows[-1]}")
    return rows


def cohen_counts(base, x, num: int, sigma: float, batch: int = 400) -> torch.Tensor:
    """Cohen et al.'s ``_sample_noise``: batches of 400, ``x.repeat``, fp32."""
    counts = torch.zeros(10, dtype=torch.long, device=x.device)
    with torch.no_grad():
        remaining = num
        while remaining > 0:
            b = min(batch, remaining)
            remaining -= b
            batch_x = x.repeat((b, 1, 1, 1))
            counts += torch.bincount(base(batch_x + torch.randn_like(batch_x) * sigma).argmax(1), minlength=10)
    return counts


def bench_certify_gpu(data, device, paired_times, row, repeats: int, num: int = 100_000) -> list[dict]:
    """Seconds per image (one CERTIFY's n samples) at n = ``num``, sigma 0.25."""
    sigma, rows = 0.25, []
    x = data.x_eval[0].to(device)
    for name in GPU_MODELS:
        net, our_net = _model(name, data, device, False), _model(name, data, device, True)
        ref = partial(cohen_counts, net, x, num, sigma)
        for label, precision, compile_ in (("", "fp32", False), ("_bf16_compiled", "bf16", True)):
            note(f"certify{label} {name}: checking the sampler against fp32 on the probe")
            smoothed = Smoothed(our_net, 10, sigma, CUDA_CERTIFY_BATCH, "torch", precision, compile_)
            if not smoothed.verify_fast(x, num, seed=0):
                rows.append(row(f"certify_cuda{label}:{name}", float("nan"), float("nan"),
                                "s/image (fell back: counts differ from fp32)", ratio=float("nan")))  # fmt: skip
                continue
            gen = torch.Generator(device=device)
            ours = synced(lambda s=smoothed, g=gen: s.sample_counts(x, num, g.manual_seed(0)), device)
            ours()  # warm-up: cuDNN autotuning, compilation
            t_ours, t_ref, ratio = paired_times(ours, synced(ref, device), repeats)
            rows.append(row(f"certify_cuda{label}:{name}", t_ours, t_ref, f"s/image at n={num} (lower is better)",
                            ratio=ratio))  # fmt: skip
            note(f"{rows[-1]}")
    return rows
