"""``edge bundle --artifact``: an edge build made by somebody else's toolchain (the MLPerf Tiny ResNet-8 int8
of ../shared/zoo: NHWC, raw 0..255 input, int8 I/O) bundled with the zoo's 100 CIFAR-10 test images,
measured on the host and validated torch-free like our own bundles; bad input is one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustbench_cnn.cli.main import main
from robustbench_cnn.metrics import clopper_pearson

pytest.importorskip("ai_edge_litert", reason="the 'edge' extra (ai-edge-litert) is not installed")
ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"
INT8 = ZOO / "models" / "cifar10_resnet8_mlperf_tiny_int8.tflite"
CIFAR = ZOO / "data" / "cifar10-test-first100" / "cifar10_test_first100.npz"
NO_TORCH = (
    "import runpy, sys\n"
    "for m in ('torch', 'pandas', 'scipy', 'sklearn', 'onnxruntime'): sys.modules[m] = None\n"
    "sys.argv = ['validate'] + sys.argv[1:]\n"
    "runpy.run_module('robustbench_cnn.edge', run_name='__main__')\n"
)


def _needs_zoo() -> None:
    if not INT8.is_file() or not CIFAR.is_file():
        pytest.skip(f"needs ../shared/zoo ({INT8.name}, the CIFAR-10 images): a user's clone has none")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    _needs_zoo()
    out = tmp_path_factory.mktemp("r8") / "bundle"
    args = ["edge", "bundle", "--artifact", str(INT8), "--data", str(CIFAR), "--input-range", "0..255",
            "--eps", "8/255", "--queries", "20", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    return out


def test_the_mlperf_build_is_measured_on_the_host_and_validated_torch_free(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    (entry,) = manifest["models"]
    assert entry["input"] == {"layout": "NHWC", "range": "0..255"} and entry["precision"] == "int8"
    host = pd.read_csv(bundle / "host" / "results.csv").set_index("metric")
    clean = float(host.loc["clean_acc", "value"])
    low, high = clopper_pearson(clean, 100)
    assert low <= 0.85 <= high  # the closed-division quality target, within the 100-image interval
    assert clean == pytest.approx(entry["expected"]["clean_acc"])
    assert host.loc["robust_acc", "attack"] == "square_direct" and "latency_ms_p50" in host.index
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "validate", ".", "--no-latency"], cwd=bundle,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    device = pd.read_csv(bundle / "validation" / "results.csv").set_index("metric")
    assert float(device.loc["clean_acc", "value"]) == clean  # the same interpreter numerics: exactly


def _bad(tmp_path, capsys, *args) -> str:
    assert main(["edge", "bundle", *args, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "b").exists()
    return err


def test_an_eval_set_with_object_arrays_is_refused(tmp_path, capsys):
    _needs_zoo()
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([object()] * 2, dtype=object), y=np.zeros(2, dtype=np.int64))
    err = _bad(tmp_path, capsys, "--artifact", str(INT8), "--data", str(path))
    assert "obj.npz: --data is not a plain .npz" in err


def test_an_eval_set_the_artifact_does_not_take_is_refused(tmp_path, capsys):
    _needs_zoo()
    path = tmp_path / "small.npz"
    np.savez(path, x=np.zeros((4, 16, 16, 3), dtype=np.uint8), y=np.zeros(4, dtype=np.int64))
    err = _bad(tmp_path, capsys, "--artifact", str(INT8), "--data", str(path))
    assert "takes (3, 32, 32) images (C, H, W)" in err and "(3, 16, 16)" in err


def test_float_images_and_a_run_dir_beside_an_artifact_are_refused(tmp_path, capsys):
    _needs_zoo()
    path = tmp_path / "float.npz"
    np.savez(path, x=np.zeros((4, 32, 32, 3), dtype=np.float32), y=np.zeros(4, dtype=np.int64))
    assert "not uint8 (N, H, W, C)" in _bad(tmp_path, capsys, "--artifact", str(INT8), "--data", str(path))
    assert "not both" in _bad(tmp_path, capsys, str(tmp_path), "--artifact", str(INT8), "--data", str(path))
