"""The suite's ``auto`` settings, made concrete for the run's device.

On a CPU every ``auto`` resolves to the settings the suite has always had (fp32 crafting, no
compilation, noisy batches of 1,024 on ONNX Runtime), so CPU cell ids and numbers do not move, and
two x86 runners of a nightly pool give the same table. That holds also where the CPU computes bf16
natively (AVX512_BF16, AMX), although bf16 crafting is faster there (resnet20 PGD 1.83x on a 2-core
AVX512_BF16 EPYC, ``benchmarks/perf.py`` row ``pgd_eval_bf16``): bf16 gradients depend on the kernels
of the CPU they run on, so a runner with native bf16 and one without would craft different
adversarial examples from the same weights, and the gate could no longer hold them to the same
numbers. Such a CPU is named in the log, and a suite run on one kind of machine sets
``attack_precision = "bf16"`` to have the speed (``clean_acc_bf16`` and ``bf16_agreement`` then report
its parity). On
CUDA it picks what makes a GPU fast without changing a verdict (the model itself, in fp32, decides
every robust-accuracy row):

- ``attack_precision = "auto"``: bf16 crafting where the GPU has native bfloat16 (the clean cell then
  reports ``clean_acc_bf16`` and ``bf16_agreement``), else fp32;
- ``compile = "auto"``: ``torch.compile`` of the crafting module when a model's attack work reaches
  ``compile_min_work`` image-steps (compiling costs tens of seconds per model and shape);
- ``cudnn_benchmark = "auto"``: cuDNN autotuning from the same amount of work (each new batch shape
  costs seconds of timing, so small suites run faster without it: the smoke suite on an H100 trained
  in 38 s without it, 67-69 s with it); when on, attacks tune only their full-batch shape
  (:func:`robustbench_cnn.attacks.crafting.autotune_if`);
- certification draws noise in batches of 16,384 on the torch runtime;
- attack batches fill the GPU: :func:`fitting_batch` (per model, from a measured probe step).

An explicit setting in the suite always wins.
"""

from __future__ import annotations

import functools
import logging
import math

import torch
from torch import nn

from robustbench_cnn.attacks.crafting import bf16_native
from robustbench_cnn.config.spec import SuiteSpec

log = logging.getLogger(__name__)

CPU_CERTIFY_BATCH, CUDA_CERTIFY_BATCH = 1024, 16384
MAX_ATTACK_BATCH = 4096
MEMORY_SHARE = 0.25  # of the GPU's total memory, for one attack batch's forward + input gradient


def attack_work(spec: SuiteSpec, eval_size: int) -> float:
    """Image-steps of one model's attack cells (each eps of each evaluation, every restart)."""
    return float(sum(len(ev.eps) * ev.steps * ev.restarts for ev in spec.evaluations) * eval_size)


@functools.cache
def _name_native_bf16_cpu() -> None:
    """Once per process: the CPU's native bf16 is not used by ``auto`` (see the module docstring)."""
    log.info("this CPU computes bf16 natively: attack_precision = \"bf16\" crafts faster, at the cost of tables "
             "that differ from runners without it (auto keeps fp32)")  # fmt: skip


def resolve_for_device(spec: SuiteSpec, device: torch.device, eval_size: int) -> SuiteSpec:
    """``spec`` with every ``auto`` performance/certification setting made concrete for ``device``."""
    perf, cert = spec.performance, spec.certify
    cuda = device.type == "cuda"
    precision = perf.attack_precision
    if precision == "auto":
        precision = "bf16" if cuda and bf16_native(device) else "fp32"
        if not cuda and bf16_native(device):
            _name_native_bf16_cpu()
    long_attacks = cuda and attack_work(spec, eval_size) >= perf.compile_min_work
    compile_ = long_attacks if perf.compile == "auto" else perf.compile
    benchmark = long_attacks if perf.cudnn_benchmark == "auto" else perf.cudnn_benchmark
    runtime = cert.runtime if cert.runtime != "auto" else ("onnxruntime" if device.type == "cpu" else "torch")
    batch = cert.batch_size or (CUDA_CERTIFY_BATCH if cuda else CPU_CERTIFY_BATCH)
    return spec.model_copy(
        update={
            "performance": perf.model_copy(
                update={"attack_precision": precision, "compile": compile_, "cudnn_benchmark": benchmark}
            ),
            "certify": cert.model_copy(update={"runtime": runtime, "batch_size": batch}),
        }
    )


def fitting_batch(model: nn.Module, sample_shape: tuple[int, ...], device: torch.device, default: int) -> int:
    """Images per attack batch on ``device``: ``default`` off CUDA; on CUDA the largest power of two
    up to :data:`MAX_ATTACK_BATCH` whose forward pass plus input gradient (an attack step, measured
    on a probe batch of 32) fits in :data:`MEMORY_SHARE` of the GPU's total memory. A function of
    the model and the GPU model only (not of free memory), so a resumed run batches the same way."""
    if device.type != "cuda":
        return default
    probe = 32
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    x = torch.rand((probe, *sample_shape), device=device, requires_grad=True)
    flags = [p.requires_grad for p in model.parameters()]
    try:
        model.requires_grad_(False)
        (grad,) = torch.autograd.grad(model(x).float().sum(), x)
        del grad
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    per_image = max(torch.cuda.max_memory_allocated(device) - base, 1) / probe
    budget = MEMORY_SHARE * torch.cuda.get_device_properties(device).total_memory
    return int(max(1, min(MAX_ATTACK_BATCH, 2 ** math.floor(math.log2(max(budget / per_image, 1))))))
