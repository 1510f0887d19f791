"""tools/gpu_check.py's comparison (the CUDA run itself needs a GPU): tolerances, missing rows, and
rows that ran on the CPU without being declared."""

import importlib.util
from pathlib import Path

import pandas as pd

spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "tools" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def table(rows):
    base = {"attack": "", "norm": "", "eps": float("nan"), "format": "torch", "runtime": "torch",
            "compression": "none", "batch_size": float("nan"), "device": "cuda"}  # fmt: skip
    return pd.DataFrame([{**base, **r} for r in rows])


def test_gpu_run_within_tolerance_passes_and_every_fault_is_named():
    cpu = table([
        {"model": "a", "metric": "clean_acc", "value": 0.95, "device": "cpu"},
        {"model": "a", "metric": "robust_acc", "attack": "pgd", "norm": "linf", "eps": 0.1, "value": 0.40,
         "device": "cpu"},
        {"model": "a", "metric": "clean_acc", "format": "onnx", "runtime": "onnxruntime", "value": 0.95,
         "device": "cpu"},
    ])  # fmt: skip
    good = table([
        {"model": "a", "metric": "clean_acc", "value": 0.96},
        {"model": "a", "metric": "robust_acc", "attack": "pgd", "norm": "linf", "eps": 0.1, "value": 0.42},
        {"model": "a", "metric": "clean_acc", "format": "onnx", "runtime": "onnxruntime", "value": 0.95},
        {"model": "a", "metric": "latency_ms_p50", "value": 0.1},
    ])  # fmt: skip
    assert gpu_check.compare_runs(good, cpu, 0.03, set()) == []
    bad = good.copy()
    bad.loc[1, "value"] = 0.30  # 10 points off
    bad.loc[2, "device"] = "cpu"  # ONNX Runtime fell back to its CPU provider
    bad = bad.drop(index=0)  # a row the CPU run has
    problems = gpu_check.compare_runs(bad, cpu, 0.03, set())
    assert len(problems) == 3
    assert any("ran on cpu" in p for p in problems) and any("missing on cuda" in p for p in problems)
    assert any("cuda 0.3000 vs cpu 0.4000" in p for p in problems)
    declared = gpu_check.compare_runs(bad, cpu, 0.03, {"onnx"})
    assert len(declared) == 2  # the fallback is declared; the other faults stay


def test_models_trained_on_each_device_are_judged_on_clean_accuracy_only():
    """GPU-trained models are other models: on an H100 the smoke suite's robust rows moved by up to
    16 points against the CPU's. Without shared weights only clean_acc is judged; robust rows are
    summarised."""
    cpu = table([
        {"model": "a", "metric": "clean_acc", "value": 0.95, "device": "cpu"},
        {"model": "a", "metric": "robust_acc", "attack": "pgd", "norm": "linf", "eps": 0.1, "value": 0.40,
         "device": "cpu"},
    ])  # fmt: skip
    gpu = table([
        {"model": "a", "metric": "clean_acc", "value": 0.93},
        {"model": "a", "metric": "robust_acc", "attack": "pgd", "norm": "linf", "eps": 0.1, "value": 0.25},
    ])  # fmt: skip
    assert gpu_check.compare_runs(gpu, cpu, 0.05, set(), same_weights=False) == []
    assert "1 robust/other accuracy rows not judged" in gpu_check.unjudged_summary(gpu, cpu)
    assert "max 0.1500" in gpu_check.unjudged_summary(gpu, cpu)
    assert len(gpu_check.compare_runs(gpu, cpu, 0.03, set(), same_weights=True)) == 1  # same weights: judged
    gpu.loc[0, "value"] = 0.85
    assert len(gpu_check.compare_runs(gpu, cpu, 0.05, set(), same_weights=False)) == 1
