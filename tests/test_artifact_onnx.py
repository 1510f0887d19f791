"""``edge bundle --artifact MODEL.onnx``: an ONNX edge build measured on ONNX Runtime with its own input
contract (layout from the input's shape, dtype from the graph, range declared), bundled and validated
torch-free (numpy + onnxruntime only). No shared data: tiny CNNs are exported here, NCHW in [0, 1], NHWC
in 0..255 (a permute and a scale in front), NHWC uint8, and an int8 QDQ graph; a suite dataset
(``--data digits``) serves as the eval set. Bad input is one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from robustbench_cnn.cli.main import main
from robustbench_cnn.export.onnx import export_onnx, quantize_int8

# the validator as a device runs it: from the bundle's own copy, torch, pandas, scipy and onnx unimportable
NO_TORCH = (
    "import runpy, sys\n"
    "for m in ('torch', 'pandas', 'scipy', 'sklearn', 'onnx'): sys.modules[m] = None\n"
    "sys.argv = ['validate'] + sys.argv[1:]\n"
    "runpy.run_module('robustbench_cnn.edge', run_name='__main__')\n"
)
SIZE, N = 12, 40


class Net(nn.Module):
    """A tiny CNN: float32 (N, 3, 12, 12) in [0, 1] -> logits (N, 10)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.avg_pool2d(torch.relu(self.conv(x)), 2), 1))


class Nhwc(nn.Module):
    """``net`` behind NHWC input in 0..255 (float32 (N, H, W, 3)), or uint8 bytes when ``uint8``."""

    def __init__(self, net: nn.Module, uint8: bool = False) -> None:
        super().__init__()
        self.net, self.uint8 = net, uint8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        return self.net((x.float() if self.uint8 else x) / 255)


def validate(bundle, *args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", NO_TORCH, "validate", ".", "--no-latency", *args]
    return subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``{variant: (path, --input-range)}`` of the tiny CNN exported four ways, and the eval .npz."""
    root = tmp_path_factory.mktemp("onnx")
    net = Net().eval()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)
    with torch.no_grad():
        pred = net(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    y = np.where(np.arange(N) % 4 == 0, (pred + 1) % 10, pred)  # about 75% clean accuracy
    np.savez(root / "eval.npz", x=x, y=y)
    out = {"nchw": (export_onnx(net, (3, SIZE, SIZE), root / "nchw.onnx"), "0..1"),
           "nhwc": (export_onnx(Nhwc(net), (SIZE, SIZE, 3), root / "nhwc.onnx"), "0..255")}  # fmt: skip
    sample = torch.zeros((2, SIZE, SIZE, 3), dtype=torch.uint8)
    program = torch.onnx.export(Nhwc(net, uint8=True).eval(), (sample,), input_names=["images"], dynamo=True,
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)  # fmt: skip
    program.save(str(root / "uint8.onnx"))
    out["uint8"] = (root / "uint8.onnx", "0..255")
    calibration = np.ascontiguousarray(x[:16].transpose(0, 3, 1, 2), dtype=np.float32) / 255
    out["qdq"] = (quantize_int8(out["nchw"][0], root / "qdq.int8.onnx", calibration), "0..1")
    return out, root / "eval.npz"


def _bundle(tmp_path, path, data, input_range, *extra) -> tuple:
    out = tmp_path / f"b-{path.stem}"
    args = ["edge", "bundle", "--artifact", str(path), "--data", str(data), "--input-range", input_range,
            "--out", str(out), *extra]  # fmt: skip
    assert main(args) == 0
    (entry,) = json.loads((out / "manifest.json").read_text())["models"]
    return out, entry, pd.read_csv(out / "host" / "results.csv").set_index("metric")


@pytest.mark.parametrize(
    ("variant", "layout", "precision"),
    [("nchw", "NCHW", "fp32"), ("nhwc", "NHWC", "fp32"), ("uint8", "NHWC", "int8"), ("qdq", "NCHW", "int8")],
)
def test_an_onnx_build_is_measured_on_onnx_runtime_and_validated_torch_free(models, tmp_path, variant, layout,
                                                                            precision):  # fmt: skip
    (path, input_range), data = models[0][variant], models[1]
    extra = ["--eps", "8/255", "--queries", "5"] if variant == "nhwc" else []
    bundle, entry, host = _bundle(tmp_path, path, data, input_range, *extra)
    assert entry["input"] == {"layout": layout, "range": input_range} and entry["precision"] == precision
    assert entry["file"] == f"models/{path.stem}.{precision}.onnx"
    assert set(host["format"]) == {"onnx"} and set(host["runtime"]) == {"onnxruntime"}
    clean = float(host.loc["clean_acc", "value"])
    assert clean == pytest.approx(entry["expected"]["clean_acc"]) and "latency_ms_p50" in host.index
    if variant != "qdq":  # the same network in every layout and dtype: 75% by construction
        assert clean == pytest.approx(0.75, abs=0.03)
    if extra:
        assert host.loc["robust_acc", "attack"] == "square_direct"
    proc = validate(bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    device = pd.read_csv(bundle / "validation" / "results.csv").set_index("metric")
    assert float(device.loc["clean_acc", "value"]) == clean and device.loc["clean_acc", "format"] == "onnx"
    assert json.loads((bundle / "validation" / "results.json").read_text())["environment"]["runtime"] == "onnxruntime"


def test_a_tampered_onnx_fails_validation(models, tmp_path):
    (path, input_range), data = models[0]["nchw"], models[1]
    bundle, entry, _ = _bundle(tmp_path, path, data, input_range)
    model = bundle / entry["file"]
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    model.write_bytes(bytes(raw))
    proc = validate(bundle)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{entry['file']}: files: sha256 mismatch" in proc.stderr and not (bundle / "validation").exists()
    model.write_bytes(b"not an onnx graph")  # a consistent forger: the manifest records the new hash
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][entry["file"]] = hashlib.sha256(b"not an onnx graph").hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = validate(bundle)
    assert proc.returncode == 2 and "models[0].file: not a loadable ONNX model (" in proc.stderr, proc.stderr


def digits_linear(digits) -> nn.Module:
    """A linear classifier of the 8x8 digits, (N, 1, 8, 8) in [0, 1] -> (N, 10), fitted by least squares."""
    x = torch.cat([digits.x_train.flatten(1), torch.ones(len(digits.x_train), 1)], 1)
    w = torch.linalg.lstsq(x, nn.functional.one_hot(digits.y_train, 10).float()).solution
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.copy_(w[:64].T)
        model[1].bias.copy_(w[64])
    return model.eval()


def test_a_suite_dataset_is_the_eval_set(digits, tmp_path):
    """``--data digits --eval-size 120``: the seeded subset a suite's ``eval_size = 120`` evaluates."""
    model = digits_linear(digits)
    path = export_onnx(model, (1, 8, 8), tmp_path / "digits_linear.onnx")
    bundle, entry, host = _bundle(tmp_path, path, "digits", "0..1", "--eval-size", "120")
    with torch.no_grad():
        want = float((model(digits.x_eval).argmax(1) == digits.y_eval).float().mean())
    assert float(host.loc["clean_acc", "value"]) == pytest.approx(want, abs=0.01) and want > 0.8
    assert host.loc["clean_acc", "dataset"] == "digits" and int(host.loc["clean_acc", "n"]) == 120
    assert json.loads((bundle / "manifest.json").read_text())["source"]["dataset"] == "digits"
    assert validate(bundle).returncode == 0


def _bad(tmp_path, capsys, *args) -> str:
    assert main(["edge", "bundle", *args, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not (tmp_path / "b").exists()
    return err


def _int8_input_graph(path) -> None:
    """An ONNX graph whose input is int8 (N, 3, 12, 12) with no scale or zero point: Cast, then mean logits."""
    inp = helper.make_tensor_value_info("x", TensorProto.INT8, ["N", 3, SIZE, SIZE])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f", "axes"], ["y"], keepdims=0)]  # fmt: skip
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph(nodes, "int8_input", [inp], [out], initializer=[axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))


def test_bad_onnx_input_is_one_line(models, tmp_path, capsys):
    (nchw, _), data = models[0]["nchw"], models[1]
    small = tmp_path / "small.npz"
    np.savez(small, x=np.zeros((4, 16, 16, 3), dtype=np.uint8), y=np.zeros(4, dtype=np.int64))
    err = _bad(tmp_path, capsys, "--artifact", str(nchw), "--data", str(small))
    assert f"{nchw}: takes (3, 12, 12) images (C, H, W); {small} holds (3, 16, 16)" in err
    labels = tmp_path / "labels.npz"
    np.savez(labels, x=np.zeros((4, SIZE, SIZE, 3), dtype=np.uint8), y=np.full(4, 12, dtype=np.int64))
    err = _bad(tmp_path, capsys, "--artifact", str(nchw), "--data", str(labels))
    assert f"{nchw}: gives 10 logits; {labels} has labels up to 12" in err
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([object()] * 2, dtype=object), y=np.zeros(2, dtype=np.int64))
    assert "obj.npz: --data is not a plain .npz" in _bad(tmp_path, capsys, "--artifact", str(nchw), "--data", str(obj))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    err = _bad(tmp_path, capsys, "--artifact", str(junk), "--data", str(data))
    assert f"{junk}: --artifact: not an ONNX model ONNX Runtime can run (" in err
    int8 = tmp_path / "int8_input.onnx"
    _int8_input_graph(int8)
    err = _bad(tmp_path, capsys, "--artifact", str(int8), "--data", str(data))
    assert "its input is tensor(int8), not float32, float16 or uint8 images" in err
    err = _bad(tmp_path, capsys, "--artifact", str(models[0]["uint8"][0]), "--data", str(data))
    assert "--input-range 0..1: its uint8 input takes the bytes 0..255; pass --input-range 0..255" in err


def test_bad_data_and_artifact_names_are_one_line(models, tmp_path, capsys):
    (nchw, _), data = models[0]["nchw"], models[1]
    err = _bad(tmp_path, capsys, "--artifact", str(nchw), "--data", "cifar100")
    assert "--data 'cifar100': neither an .npz file nor a registered dataset; give the path" in err
    assert err.rstrip().endswith("or a dataset name; did you mean 'cifar10'?")
    err = _bad(tmp_path, capsys, "--artifact", str(nchw), "--data", "mnist")
    assert "dataset 'mnist' needs dataset.data_dir (or --data-dir)" in err
    assert "no such file" in _bad(tmp_path, capsys, "--artifact", str(nchw), "--data", str(tmp_path / "none.npz"))
    torch_file = tmp_path / "model.pt"
    shutil.copyfile(nchw, torch_file)
    err = _bad(tmp_path, capsys, "--artifact", str(torch_file), "--data", str(data))
    assert f"{torch_file}: --artifact: a '.pt' file is no edge build this command runs; give a .tflite or .onnx" in err
    err = _bad(tmp_path, capsys, "--artifact", str(tmp_path / "gone.onnx"), "--data", str(data))
    assert "gone.onnx: --artifact: no such file" in err
    assert "--eval-size 0" in _bad(tmp_path, capsys, "--artifact", str(nchw), "--data", str(data), "--eval-size", "0")
