"""ONNX fp32/int8 exports agree with their torch source; parity failures are marked, never hidden;
GPU targets on a machine without a GPU are skipped with a row, never measured on the CPU."""

import pytest

from robustbench_cnn.config.load import load_suite
from robustbench_cnn.engine.runner import RunOptions, run_suite
from robustbench_cnn.measures.export import parity_problems

EXPORTS = """
[[exports]]
format = "onnx"
precision = "fp32"

[[exports]]
format = "onnx"
precision = "int8"
calibration_size = 64
"""


def test_onnx_exports_measured_with_parity_rows(tmp_path, tiny_suite, export_rows):
    path = tiny_suite()
    path.write_text(path.read_text() + EXPORTS)
    result = run_suite(load_suite(path), RunOptions(tmp_path / "out", tmp_path / "cache", progress=False))
    assert not result.manifest.get("failed_cells"), result.manifest.get("failed_cells")
    df = result.table
    assert set(df[df.runtime == "onnxruntime"].format) == {"onnx"}
    fp32, int8, torch_clean = export_rows(df, "onnx")
    assert fp32.loc["parity_top1_agreement", "value"] >= 0.995
    assert fp32.loc["parity_max_abs_logit_diff", "value"] < 1e-3
    assert fp32.loc["clean_acc", "value"] == pytest.approx(torch_clean, abs=1 / 60)
    assert int8.loc["parity_top1_agreement", "value"] >= 0.97
    # weights: int8 initializers take a quarter of fp32's (the whole file of this 4-channel model is
    # dominated by the QDQ graph, so its size_bytes need not shrink)
    weights = {p: _initializer_bytes(result.run_dir / "exports" / p) for p in ("cnn.onnx", "cnn.int8.onnx")}
    assert weights["cnn.int8.onnx"] < 0.5 * weights["cnn.onnx"]
    assert {"latency_ms_p50", "throughput"} <= set(fp32.index)
    assert (result.run_dir / "exports" / "cnn.onnx").is_file()
    direct = df[df.attack == "square_direct"]  # Square Attack run on ONNX Runtime itself
    assert sorted(direct.compression) == ["int8", "none"] and set(direct.eps) == {0.1}
    for _, r in direct.iterrows():
        clean = df[(df.metric == "clean_acc") & (df.format == "onnx") & (df.compression == r.compression)]
        assert r.value <= clean.value.item()


def _initializer_bytes(path) -> int:
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)


@pytest.mark.parametrize(
    ("settings", "agreement", "diff", "loss", "message"),
    [
        ({"precision": "fp32"}, 0.99, 0.0, 0.0, "top-1 agreement 0.9900 (>= 0.995 needed)"),
        ({"precision": "fp32"}, 1.0, 0.05, 0.0, "max |dlogit| 0.05"),
        ({"precision": "int8"}, 0.96, 0.0, 0.0, "top-1 agreement 0.9600 (>= 0.97 needed)"),
        ({"precision": "int8"}, 0.99, 0.0, 0.03, "accuracy loss 3.00 pt (<= 2 needed)"),
        ({"precision": "int8", "min_agreement": 0.8}, 0.85, 0.0, 0.0, None),  # the suite's threshold
        ({"precision": "int8", "min_agreement": 0.9}, 0.85, 0.0, 0.0, "(>= 0.9 needed)"),
        ({"precision": "fp16"}, 0.985, 0.0, 0.0, "(>= 0.99 needed)"),
    ],
)
def test_parity_thresholds(settings, agreement, diff, loss, message):
    from robustbench_cnn.config.spec import ExportSpec

    fmt = "onnx" if settings["precision"] != "int8" else "tflite"
    settings = ExportSpec(format=fmt, **settings)
    problems = parity_problems(settings, agreement, diff, 10.0, loss)
    assert (message is None and problems == []) or (message is not None and message in problems[0])
    assert parity_problems(settings, 1.0, 0.0, 10.0, 0.0) == []  # within tolerance: passes


GPU_EXPORTS = """
[[exports]]
format = "onnx"
precision = "fp16"

[[exports]]
format = "aoti"
precision = "bf16"

[[exports]]
format = "onnx"
precision = "int8"
calibration_size = 64
min_agreement = 1.0
"""


def test_parity_failures_keep_their_rows_and_gpu_targets_are_skipped_on_cpu(tmp_path, tiny_suite):
    path = tiny_suite()
    path.write_text(path.read_text() + GPU_EXPORTS)
    result = run_suite(load_suite(path), RunOptions(tmp_path / "out", tmp_path / "cache", progress=False))
    assert result.manifest["status"] == "complete", result.manifest.get("failed_cells")
    df = result.table
    skipped = df[df.metric == "export_skipped"]
    assert sorted(zip(skipped.format, skipped.compression, strict=True)) == [("aoti", "bf16"), ("onnx", "fp16")]
    assert not df[df.compression.isin(["fp16", "bf16"]) & (df.metric != "export_skipped")].shape[0]  # no CPU rows
    int8 = df[(df.compression == "int8")].set_index("metric").value
    assert {"clean_acc", "robust_acc", "latency_ms_p50"} <= set(int8.index)  # rows either way
    assert int8["check_parity"] == float(int8["parity_top1_agreement"] >= 1.0)
    reasons = result.manifest["models"]["cnn"]["skipped_exports"].values()
    assert len(reasons) == 2 and all("GPU target" in r for r in reasons)


def test_exports_are_evaluated_on_the_float_models_adversarial_examples(tmp_path, tiny_suite):
    path = tiny_suite()
    path.write_text(path.read_text() + EXPORTS)
    result = run_suite(load_suite(path), RunOptions(tmp_path / "out", tmp_path / "cache", progress=False))
    df = result.table
    robust = df[(df.metric == "robust_acc") & (df.attack == "pgd")]
    robust = robust.set_index(["runtime", "compression", "eps"]).value.sort_index()
    torch_robust = robust.loc[("torch", "none")]
    fp32 = robust.loc[("onnxruntime", "none")]
    assert set(fp32.index) == set(torch_robust.index) == {0.0, 0.1}
    assert (
        fp32.loc[0.0]
        == df[(df.metric == "clean_acc") & (df.runtime == "onnxruntime") & (df.compression == "none")].value.item()
    )
    assert abs(fp32.loc[0.1] - torch_robust.loc[0.1]) <= 2 / 60  # same examples, same function up to float error
    assert robust.loc[("onnxruntime", "int8")].loc[0.1] <= robust.loc[("onnxruntime", "int8")].loc[0.0]
    adv_files = list((result.run_dir / "cells").glob("*.adv.npy"))
    assert adv_files  # kept for the deployed models, and for resumed runs


def test_export_leaves_the_model_untouched(tmp_path):
    import torch

    from robustbench_cnn.export.onnx import export_onnx
    from robustbench_cnn.models import build_model

    model = build_model("simple_cnn", 10, 1, [0.5], [0.25], {"width": 4}).eval().to(memory_format=torch.channels_last)
    export_onnx(model, (1, 8, 8), tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").stat().st_size > 0
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_direct_black_box_attack_runs_on_the_runtime_and_respects_the_threat_model():
    import numpy as np

    from robustbench_cnn.export.blackbox import direct_robust

    class Linear:  # a "deployed" model: numpy in, logits out, no gradients available
        def predict(self, images, batch_size=256):
            flat = images.reshape(len(images), -1)
            return np.stack([flat.mean(1), 0.5 * np.ones(len(images))], 1).astype(np.float32)

    rng = np.random.default_rng(0)
    x = np.clip(0.55 + 0.02 * rng.standard_normal((32, 1, 4, 4)), 0, 1).astype(np.float32)  # class 0: mean > 0.5
    y = np.zeros(32, dtype=np.int64)
    clean = Linear().predict(x).argmax(1) == y
    assert clean.all()
    assert direct_robust(Linear(), x, y, clean, 0.01, 50, seed=0).all()  # 0.01 cannot move the mean below 0.5
    assert direct_robust(Linear(), x, y, clean, 0.5, 100, seed=0).mean() < 0.2  # random search finds most


def test_direct_attack_keeps_torch_off_the_runtimes_cores():
    """torch's thread pool spinning beside the runtime's cost 30x on a 16-core GPU host: Square
    Attack's own tensor work runs on at most 2 torch threads, and the setting is restored."""
    import numpy as np
    import torch

    from robustbench_cnn.export.blackbox import direct_robust

    seen = []

    class Recording:
        def predict(self, images, batch_size=256):
            seen.append(torch.get_num_threads())
            return np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (len(images), 1))

    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        x, y = np.full((4, 1, 4, 4), 0.5, dtype=np.float32), np.zeros(4, dtype=np.int64)
        direct_robust(Recording(), x, y, np.ones(4, dtype=bool), 0.1, 5, seed=0)
        assert seen and max(seen) <= 2
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
