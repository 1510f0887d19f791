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


EDGE_SUITE = """
name = "edge-et"
seed = 1
device = "cpu"
[dataset]
name = "digits"
eval_size = 60
[[models]]
name = "cnn"
arch = "simple_cnn"
params = { width = 8 }
train = { epochs = 4, batch_size = 64, lr = 0.1 }
[[evaluations]]
attack = "pgd"
eps = [0.1]
steps = 3
[checks]
enabled = false
[latency]
enabled = false
[[exports]]
format = "tflite"
precision = "int8"
calibration_size = 32
direct_queries = 0
[[exports]]
format = "executorch"
precision = "fp32"
direct_queries = 0
[[exports]]
format = "executorch"
precision = "int8"
calibration_size = 32
direct_queries = 0
"""


@needs_executorch
def test_a_bundle_ships_executorch_programs_validated_where_torch_is_and_skipped_where_not(tmp_path):
    import json
    import subprocess
    import sys

    pytest.importorskip("litert_torch", reason="the 'edge' extra is not installed")
    from robustbench_cnn.cli.bundle import build_bundle

    (tmp_path / "s.toml").write_text(EDGE_SUITE)
    run = run_suite(load_suite(tmp_path / "s.toml"), RunOptions(tmp_path / "out", tmp_path / "cache", progress=False))
    bundle = build_bundle(run.run_dir, tmp_path / "bundle", include_failed_parity=True)  # a 4-epoch model
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = sorted(m["file"] for m in manifest["models"])
    assert files == ["models/cnn.fp32.pte", "models/cnn.int8.pte", "models/cnn.int8.tflite"]
    assert len({m["predictions"] for m in manifest["models"]}) == 3  # one reference per (format, precision)

    def validate(*blocked: str) -> subprocess.CompletedProcess:
        code = ("import runpy, sys\n"
                f"for m in {blocked!r}: sys.modules[m] = None\n"
                "sys.argv = ['edge', 'validate', '.', '--no-latency']\n"
                "runpy.run_module('robustbench_cnn.edge', run_name='__main__')\n")  # fmt: skip
        return subprocess.run([sys.executable, "-c", code], cwd=bundle, capture_output=True, text=True, timeout=300)

    full = validate()  # an ExecuTorch environment (torch + executorch) with LiteRT too: all three run
    assert full.returncode == 0, full.stdout + full.stderr
    assert "3/3 models match" in full.stdout and "ok   cnn [int8 executorch]" in full.stdout
    torch_free = validate("torch", "pandas", "executorch")  # a Pi: the .pte programs are skipped, named
    assert torch_free.returncode == 0, torch_free.stdout + torch_free.stderr
    assert "1/1 models match" in torch_free.stdout
    assert "skip cnn [fp32 executorch]: no ExecuTorch runtime here (pip install executorch torch)" in (
        torch_free.stdout
    )
    nothing = validate("torch", "executorch", "ai_edge_litert", "tflite_runtime")  # no runtime at all: exit 2
    assert nothing.returncode == 2 and "no runtime here" in nothing.stderr
