"""ExecuTorch inference: a ``.pte`` program run by ExecuTorch's C++ runtime through its Python bindings
(``executorch.runtime``), its XNNPACK-delegated kernels on ``threads`` threads.

The bindings need torch on the machine that runs them: ExecuTorch 1.5.1's
``executorch/extension/pybindings/_C*.so`` links ``libtorch.so``, ``libtorch_cpu.so``,
``libtorch_python.so`` and ``libc10.so`` (``ldd`` of the manylinux x86_64 wheel), and
``portable_lib.py`` imports torch before loading it; inputs and outputs are torch tensors. This is why
a ``.pte`` in an edge bundle is validated only where torch and executorch are installed (the validator
itself, which ships this module, imports no torch: this module loads torch when a program is opened).

Tensor contract: ``predict`` takes float32 numpy images ``(N, C, H, W)`` in [0, 1] and returns float32
logits ``(N, K)``, running the program's fixed batch (1) per call.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from robustbench_cnn.runtime.batches import in_fixed_batches
from robustbench_cnn.runtime.timing import LatencyStats, measure

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Hide the runtime's native start-up lines (cpuinfo probing /sys, written to fd 2 by C++) unless
    debug logging is on; Python logging is untouched."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class ExecutorchModel:
    """A ``.pte`` file behind ExecuTorch's runtime; ``predict`` takes [0, 1] images ``(N, C, H, W)``."""

    runtime = "executorch"

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        try:
            import torch
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
        except ImportError as exc:
            raise ImportError(f"no ExecuTorch runtime ({exc}): pip install executorch (it needs torch)") from None
        self._from_numpy = torch.from_numpy
        with _quiet_native_stderr():
            portable_lib._unsafe_reset_threadpool(threads or min(4, os.cpu_count() or 1))
            program = Runtime.get().load_program(Path(path))
            self.method = program.load_method("forward")
        meta = self.method.metadata.input_tensor_meta(0)
        shape = tuple(int(d) for d in meta.sizes())
        self.batch, self.sample_shape = shape[0], shape[1:]

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        if not batch.flags.writeable:  # a bundle's arrays are read-only; torch.from_numpy warns on them
            batch = batch.copy()
        return self.method.execute([self._from_numpy(batch)])[0].numpy()

    def predict(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Logits ``(N, K)`` as float32, ``self.batch`` images per call (the program's fixed batch)."""
        return in_fixed_batches(self._invoke, images, self.sample_shape, self.batch, what="the program")

    def latency(self, warmup: int = 5, min_repeats: int = 20, budget_s: float = 1.0, seed: int = 0) -> LatencyStats:
        """Latency of one call at the program's batch size (input tensor in, logits out)."""
        x = np.random.default_rng(seed).random((self.batch, *self.sample_shape), dtype=np.float32)
        return measure(lambda: self._invoke(x), self.batch, warmup, min_repeats, budget_s)
