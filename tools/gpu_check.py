"""GPU check: run a suite on CUDA and compare it with a CPU run of the same suite and seed.

    python tools/gpu_check.py                    # smoke on cuda (trained there) vs results/baselines/smoke.csv
    python tools/gpu_check.py --cpu-run          # then the CPU on the CUDA run's weights: every row judged
    python tools/gpu_check.py --cache-dir CACHE  # cuda on the weights of a model cache (e.g. the baseline's)
    python tools/gpu_check.py --suite suites/smoke-edge.toml --cpu-reference results/baselines/smoke-edge.csv

Needs only the project's runtime dependencies, so it runs where nox cannot install (an offline GPU
box with torch preinstalled: ``PYTHONPATH=. python tools/gpu_check.py``); ``nox -s gpu`` runs it in
the project's pinned virtualenv. It passes (exit 0) when

- the CUDA run is ``complete``: every cell computed, none failed;
- no row ran on the CPU unless declared: torch rows and ONNX rows say ``cuda``; TFLite rows say
  ``cpu`` (LiteRT is a CPU runtime); ``--allow-cpu onnx`` accepts ONNX Runtime without a GPU provider;
- the accuracy rows agree with the CPU reference row of the same key. Which rows are judged depends
  on the weights. Models trained on the GPU are other models than the CPU's (other kernels, other
  summation orders: on an H100 the smoke suite's robust accuracies then moved by up to 16 points
  while clean accuracies moved by up to 4.4), so only ``clean_acc`` is judged, within
  ``--train-tol`` (default 0.05); robust rows are summarised, not judged. On the same weights
  (``--cpu-run``, whose CPU run evaluates the CUDA run's cached models, or ``--cache-dir``) every
  accuracy row (``clean_acc``, ``robust_acc``, ``certified_acc``, ``macro_f1``,
  ``parity_top1_agreement``) is judged within ``--acc-tol`` (default 0.03 = 3 points: GPU kernels
  and bf16 crafting move a few images).

Exit 1 names every row that differs or ran where it should not; exit 2 for bad input. The wall time
of the CUDA run and its stage seconds are printed (the acceptance target is <= 45 s for the smoke
suite from a cold model cache: ``--cold`` uses an empty cache).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCURACY = ("clean_acc", "robust_acc", "certified_acc", "macro_f1", "parity_top1_agreement")
TRAINED_APART = ("clean_acc",)  # what is judged when each device trained its own models
KEY = ["model", "metric", "attack", "norm", "eps", "format", "runtime", "compression", "batch_size"]


def _run(suite: Path, device: str, out: Path, cache: Path):
    from robustbench_cnn.config.load import load_suite
    from robustbench_cnn.engine.runner import RunOptions, run_suite

    return run_suite(load_suite(suite), RunOptions(out, cache, device=device, progress=False))


def _accuracy(table, metrics=ACCURACY):
    """Accuracy values indexed by the row key; empty key cells as "" (NaN never equals itself)."""
    rows = table[table.metric.isin(metrics)]
    keys = {k: rows[k].astype(object).where(rows[k].notna(), "") for k in KEY}
    return rows.assign(**keys).set_index(KEY)["value"]


def compare_runs(gpu, cpu, acc_tol: float, allow_cpu: set[str], same_weights: bool = True) -> list[str]:
    """Problems of a CUDA results table against a CPU one (empty: the check passes). ``same_weights``
    False: the GPU trained its own models, so only ``clean_acc`` rows are judged (see the module doc)."""
    problems = _placement(gpu, allow_cpu)
    g, c = _accuracy(gpu), _accuracy(cpu, ACCURACY if same_weights else TRAINED_APART)
    for key in sorted(set(c.index) - set(g.index), key=str):
        problems.append(f"missing on cuda: {dict(zip(KEY, key, strict=True))}")
    both = g.index.intersection(c.index)
    diff = (g[both] - c[both]).abs()
    for key, d in diff[diff > acc_tol].items():
        row = ", ".join(f"{k}={v}" for k, v in zip(KEY, key, strict=True) if v != "")
        problems.append(f"{row}: cuda {g[key]:.4f} vs cpu {c[key]:.4f} (|diff| {d:.4f} > {acc_tol})")
    return problems


def unjudged_summary(gpu, cpu) -> str | None:
    """One line on the accuracy rows left unjudged because the weights differ (None: there are none)."""
    g, c = _accuracy(gpu), _accuracy(cpu)
    both = g.index.intersection(c.index).difference(_accuracy(cpu, TRAINED_APART).index)
    if len(both) == 0:
        return None
    diff = (g[both] - c[both]).abs()
    return (f"{len(both)} robust/other accuracy rows not judged (models trained on each device): "
            f"|diff| mean {diff.mean():.4f}, max {diff.max():.4f}; --cpu-run or --cache-dir judges them")  # fmt: skip


def _placement(gpu, allow_cpu: set[str]) -> list[str]:
    """Rows that ran on another device than their format's (TFLite on the CPU, the rest on CUDA)."""
    problems = []
    expected = {"torch": "cuda", "onnx": "cpu" if "onnx" in allow_cpu else "cuda", "tflite": "cpu"}
    for fmt, rows in gpu.groupby("format"):
        wrong = rows[rows.device != expected.get(fmt, "cuda")]
        if fmt == "onnx" and "onnx" in allow_cpu:
            wrong = wrong[~wrong.device.isin(["cpu", "cuda"])]
        for _, r in wrong.drop_duplicates(["model", "format", "compression"]).iterrows():
            problems.append(f"{r.model} {fmt}/{r.compression}: ran on {r.device}, expected {expected.get(fmt)}")
    return problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, default=ROOT / "suites" / "smoke.toml")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N")
    parser.add_argument("--cpu-reference", type=Path, default=None,
                        help="results CSV of a CPU run (default: results/baselines/<suite>.csv)")  # fmt: skip
    parser.add_argument("--cpu-run", action="store_true",
                        help="then run the suite on the CPU on the CUDA run's weights, as the reference")  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="model cache of the reference's weights (every accuracy row is then judged)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="results root (default: a temporary folder)")
    parser.add_argument("--cold", action="store_true", help="start from an empty model cache")
    parser.add_argument("--acc-tol", type=float, default=0.03, help="accuracy rows on the same weights")
    parser.add_argument("--train-tol", type=float, default=0.05, help="clean_acc of models trained on each device")
    parser.add_argument("--allow-cpu", nargs="*", default=[], choices=["onnx"], help="declared CPU fallbacks")
    parser.add_argument("--write-baseline", type=Path, default=None, help="copy the CUDA results.csv here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from robustbench_cnn.contract.results import read_csv

    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; run this on a GPU machine", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    cache = args.cache_dir or (Path(tempfile.mkdtemp(prefix="gpu-cache-")) if args.cold else out / "cache")
    gpu = _run(args.suite, args.device, out / "cuda", cache)
    print(f"cuda run: {gpu.run_dir} ({gpu.manifest['status']}, {gpu.manifest['wall_seconds']:.1f} s wall; "
          f"stages {gpu.manifest['stage_seconds']}; {torch.cuda.get_device_name()})")  # fmt: skip
    if args.cpu_run:  # the CUDA run's cache: the same weights
        cpu_table = _run(args.suite, "cpu", out / "cpu", cache).table
    else:
        cpu_table = read_csv(args.cpu_reference or ROOT / "results" / "baselines" / f"{args.suite.stem}.csv")
    same = args.cpu_run or args.cache_dir is not None
    problems = [f"cell {c['model']} {c['cell']}: {c['error']}" for c in gpu.manifest.get("failed_cells", [])]
    tol = args.acc_tol if same else args.train_tol
    problems += compare_runs(gpu.table, cpu_table, tol, set(args.allow_cpu), same_weights=same)
    if args.write_baseline:
        args.write_baseline.write_bytes((gpu.run_dir / "results.csv").read_bytes())
    for p in problems:
        print(f"gpu_check: {p}")
    if not same and (summary := unjudged_summary(gpu.table, cpu_table)):
        print(f"gpu_check: {summary}")
    print(f"gpu_check: {'FAIL' if problems else 'PASS'} ({len(problems)} problem(s))")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
