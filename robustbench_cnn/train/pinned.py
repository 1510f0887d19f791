"""Reproducible training across x86-64 CPUs: train in a child process with the math backends pinned.

The same suite and seed train different weights on different x86 machines, because the math
libraries pick their kernels by instruction set: oneDNN (convolutions) by the widest ISA it finds,
ATen's vectorized ops by its CPU capability, MKL by its code path, and the reduction order by the
thread count. Measured on one AVX-512 machine (simple_cnn, smoke recipe): ``ONEDNN_MAX_CPU_ISA``,
``ATEN_CPU_CAPABILITY`` and ``MKL_CBWR`` each change the trained weights; 1 thread differs from 2,
while 2, 3 and 4 threads give identical weights. These are read once, when the libraries initialise,
so they cannot be switched inside a running process; hence a child process (:data:`PIN_ENV`):

- ``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``, ``MKL_CBWR=AVX2``: the kernels every
  x86-64 runner of the last decade has (Intel Haswell+, AMD Zen+);
- ``OMP_NUM_THREADS=2`` (and MKL's): the same reduction order on a 2-core CI box and a 64-core one.

Evaluation is not pinned (it runs in the run's own process, at full speed); its numbers depend on
the weights far more than on the kernels. Not pinnable this way: non-x86 CPUs (ARM runners, Apple
silicon), CPUs without AVX2 (the run trains unpinned and says so) and GPUs (cuDNN; the suite's
``device`` decides). Turn it off with ``performance.reproducible_training = false``.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

PIN_ENV = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
}
PINNED = "pinned-x86-avx2-t2"  # the training mode of weights trained under PIN_ENV (part of the cache key)
NATIVE = "native"  # whatever this machine's libraries chose
CHILD_ENV = "ROBUSTBENCH_CNN_PINNED_TRAINING"  # set in the training child


@cache
def has_avx2() -> bool:
    """An x86-64 CPU with AVX2 (from ``/proc/cpuinfo``; False where it cannot be read)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return " avx2" in f" {flags.split(':', 1)[-1]} "


def training_mode(reproducible: bool, device_type: str) -> str:
    """:data:`PINNED` where training runs pinned (asked for, on the CPU of an x86-64 machine with
    AVX2), else :data:`NATIVE`."""
    return PINNED if reproducible and device_type == "cpu" and has_avx2() else NATIVE


def in_pinned_child() -> bool:
    """Whether this process is the pinned training child."""
    return os.environ.get(CHILD_ENV) == "1"
