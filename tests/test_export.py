"""ONNX fp32/int8 exports agree with their torch source; parity failures are loud."""

import pytest

from robustbench_cnn.export.measure import ParityError, check_parity
from robustbench_cnn.suite.load import load_suite
from robustbench_cnn.suite.runner import RunOptions, run_suite

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
    assert int8.loc["size_bytes", "value"] < fp32.loc["size_bytes", "value"]
    assert {"latency_ms_p50", "throughput"} <= set(fp32.index)
    assert (result.run_dir / "exports" / "cnn.onnx").is_file()


@pytest.mark.parametrize(
    ("precision", "agreement", "diff", "loss", "message"),
    [
        ("fp32", 0.99, 0.0, 0.0, "top-1 agreement 0.9900"),
        ("fp32", 1.0, 0.05, 0.0, "max \\|dlogit\\| 0.05"),
        ("int8", 0.96, 0.0, 0.0, "int8 export: top-1 agreement 0.9600"),
        ("int8", 0.99, 0.0, 0.03, "accuracy loss 3.00 pt"),
    ],
)
def test_parity_failures_are_loud(precision, agreement, diff, loss, message):
    with pytest.raises(ParityError, match=message):
        check_parity(precision, agreement, diff, 10.0, loss)
    check_parity(precision, 1.0, 0.0, 10.0, 0.0)  # within tolerance: silent


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
