"""ExecuTorch exports (``format = "executorch"``, XNNPACK delegate) agree with their torch source and get
the same rows as ONNX/TFLite exports; without the optional extra they are skipped with a row."""

import importlib.util

import numpy as np
import pytest

from robustbench_cnn.config.load import load_suite
from robustbench_cnn.config.spec_measure import ExportSpec
from robustbench_cnn.engine.runner import RunOptions, run_suite

needs_executorch = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None,
    reason="ExecuTorch not installed (pip install -e '.[executorch]'; nox -s tests installs it)",
)

EXPORTS = """
[[exports]]
format = "executorch"
precision = "fp32"

[[exports]]
format = "executorch"
precision = "int8"
calibration_size = 64
"""


@needs_executorch
def test_executorch_exports_measured_with_parity_latency_and_robustness_rows(tmp_path, tiny_suite, export_rows):
    path = tiny_suite()
    path.write_text(path.read_text() + EXPORTS)
    result = run_suite(load_suite(path), RunOptions(tmp_path / "out", tmp_path / "cache", progress=False))
    assert not result.manifest.get("failed_cells"), result.manifest.get("failed_cells")
    df = result.table
    assert set(df[df.format == "executorch"].runtime) == {"executorch"}
    fp32, int8, torch_clean = export_rows(df, "executorch")
    assert fp32.loc["parity_top1_agreement", "value"] == 1.0
    assert fp32.loc["parity_max_abs_logit_diff", "value"] < 1e-4
    assert fp32.loc["clean_acc", "value"] == pytest.approx(torch_clean, abs=1 / 60)
    assert int8.loc["parity_top1_agreement", "value"] >= 0.97
    assert fp32.loc["check_parity", "value"] == int8.loc["check_parity", "value"] == 1.0
    assert all((result.run_dir / "exports" / p).is_file() for p in ("cnn.pte", "cnn.int8.pte"))
    latency = df[(df.format == "executorch") & (df.metric == "latency_ms_p50")]
    assert set(latency.batch_size) == {1} and (latency.value > 0).all()  # batch-1 programs: the edge case
    robust = df[(df.format == "executorch") & (df.metric == "robust_acc")]
    assert {"pgd", "square_direct", "worst_case"} <= set(robust.attack)
    for compression, rows in robust.groupby("compression"):
        clean = df[(df.format == "executorch") & (df.compression == compression) & (df.metric == "clean_acc")]
        assert (rows.value <= clean.value.item()).all()


@needs_executorch
def test_executorch_program_takes_project_images_and_refuses_other_shapes(tmp_path):
    import torch

    from robustbench_cnn.export.executorch import export_executorch
    from robustbench_cnn.models import build_model
    from robustbench_cnn.runtime.executorch_runtime import ExecutorchModel

    torch.manual_seed(0)
    model = build_model("simple_cnn", 10, 1, [0.5], [0.25], {"width": 4}).eval()
    path = export_executorch(model, (1, 8, 8), tmp_path / "m.pte")
    deployed = ExecutorchModel(path, threads=1)
    assert (deployed.batch, deployed.sample_shape) == (1, (1, 8, 8))
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(deployed.predict(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="the program takes"):
        deployed.predict(np.zeros((2, 1, 9, 9), np.float32))
    with pytest.raises(ValueError, match="calibration images"):
        export_executorch(model, (1, 8, 8), tmp_path / "q.pte", precision="int8")


def test_without_executorch_the_export_is_skipped_with_a_row(tmp_path, tiny_suite, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    path = tiny_suite()
    path.write_text(path.read_text() + EXPORTS)
    result = run_suite(load_suite(path), RunOptions(tmp_path / "out", tmp_path / "cache", progress=False))
    assert result.manifest["status"] == "complete"
    rows = result.table[result.table.format == "executorch"]
    assert set(rows.metric) == {"export_skipped"} and len(rows) == 2
    reasons = result.manifest["models"]["cnn"]["skipped_exports"].values()
    assert all("robustbench-cnn[executorch]" in r for r in reasons)


@pytest.mark.parametrize(("precision", "ok"), [("fp32", True), ("int8", True), ("fp16", False), ("bf16", False)])
def test_executorch_precisions(precision, ok):
    if ok:
        assert ExportSpec(format="executorch", precision=precision).per_channel  # XNNPACK's scheme: per channel
    else:
        with pytest.raises(ValueError, match="format 'executorch' takes precision fp32 | int8"):
            ExportSpec(format="executorch", precision=precision)
