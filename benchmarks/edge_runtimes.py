"""Batch-1 latency of one run's exports on every CPU runtime, side by side in this one process.

    python benchmarks/edge_runtimes.py RUN_DIR [--rounds 7] [--calls 200] [--threads 2]

``RUN_DIR``: a run of ``suites/edge-runtimes.toml`` (or any run with ``.onnx``/``.tflite``/``.pte``
exports in ``RUN_DIR/exports``). Every file is loaded on its runtime (ONNX Runtime, LiteRT,
ExecuTorch's XNNPACK delegate) with the same thread count; then ``--rounds`` times, in turn, each one
runs ``--calls`` single-image calls on one fixed random image; a file's figure is the median of its
per-call times over every round, so all files saw the same machine state. Ratios are against ONNX
Runtime fp32 of the same model (> 1: faster). Run it alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from robustbench_cnn.runtime.executorch_runtime import ExecutorchModel
from robustbench_cnn.runtime.onnx_runtime import OrtModel
from robustbench_cnn.runtime.tflite_runtime import TfliteModel

RUNTIMES = {".onnx": "onnxruntime", ".tflite": "litert", ".pte": "executorch"}


def _callable(path: Path, threads: int, image: np.ndarray):
    """A no-argument function running one batch-1 inference of ``path`` on its runtime."""
    if path.suffix == ".onnx":
        ort = OrtModel(path, "cpu", threads=threads)
        return lambda: ort.session.run(None, {ort.input: image})
    model = TfliteModel(path, threads) if path.suffix == ".tflite" else ExecutorchModel(path, threads)
    return lambda: model._invoke(image)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    files = sorted(p for p in (args.run_dir / "exports").iterdir() if p.suffix in RUNTIMES)
    shape = np.load(args.run_dir / "cells" / next(iter(sorted((args.run_dir / "cells").glob("*.adv.npy"))))).shape[1:]
    image = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    runs = {p: _callable(p, args.threads, image) for p in files}
    times: dict[Path, list[float]] = {p: [] for p in files}
    for _ in range(args.rounds):
        for p, run in runs.items():
            for _ in range(10):  # warm caches after the other runtimes ran
                run()
            for _ in range(args.calls):
                t = time.perf_counter()
                run()
                times[p].append(time.perf_counter() - t)
    p50 = {p: statistics.median(ts) * 1e3 for p, ts in times.items()}
    print(f"batch-1 latency, {args.threads} threads, {args.rounds} rounds x {args.calls} calls, shape {shape}")
    print(f"{'model':<16} {'precision':<9} {'runtime':<12} {'p50 ms':>8} {'vs ORT fp32':>11}")
    for p in files:
        model, precision = p.name.split(".")[0], "int8" if ".int8." in p.name else "fp32"
        ref = p50.get(p.parent / f"{model}.onnx")
        ratio = f"{ref / p50[p]:.2f}x" if ref else "-"
        print(f"{model:<16} {precision:<9} {RUNTIMES[p.suffix]:<12} {p50[p]:>8.4f} {ratio:>11}")


if __name__ == "__main__":
    main()
