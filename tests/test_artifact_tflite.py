"""``edge bundle --artifact MODEL.tflite`` without shared data: tiny ``.tflite`` files written here with the
LiteRT flatbuffer schema (no converter). A linear digits classifier bundled on a suite dataset
(``--data digits``) and validated torch-free; an eval set of another shape and an int8 input without
a scale/zero point are one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from robustbench_cnn.cli.main import main

schema = pytest.importorskip("ai_edge_litert.schema_py_generated", reason="ai-edge-litert is not installed")
flatbuffers = pytest.importorskip("flatbuffers")

NO_TORCH = (
    "import runpy, sys\n"
    "for m in ('torch', 'pandas', 'scipy', 'sklearn', 'onnxruntime', 'onnx'): sys.modules[m] = None\n"
    "sys.argv = ['validate'] + sys.argv[1:]\n"
    "runpy.run_module('robustbench_cnn.edge', run_name='__main__')\n"
)


def _tensor(name: str, shape: tuple[int, ...], kind: int, buffer: int = 0):
    t = schema.TensorT()
    t.name, t.shape, t.type, t.buffer = name, list(shape), kind, buffer
    return t


def _model(tensors: list, op_code: int, inputs: list[int], output: int, buffers: list, options=None) -> bytes:
    """One subgraph of one operator, input tensor 0, serialized as a .tflite flatbuffer."""
    s = schema
    graph = s.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs = tensors, [0], [output]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, inputs, [output]
    if options is not None:
        op.builtinOptionsType, op.builtinOptions = options
    graph.operators = [op]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = op_code
    code.version = 1
    model = s.ModelT()
    model.version, model.buffers, model.operatorCodes, model.subgraphs = 3, buffers, [code], [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def linear_tflite(weights: np.ndarray, bias: np.ndarray) -> bytes:
    """float32 FULLY_CONNECTED: input (1, 1, 8, 8), logits (1, K) = x.flatten() @ weights.T + bias."""
    buffers = [schema.BufferT() for _ in range(3)]
    for buf, arr in zip(buffers[1:], (weights, bias), strict=True):
        buf.data = np.frombuffer(np.ascontiguousarray(arr, np.float32).tobytes(), np.uint8)
    f32 = schema.TensorType.FLOAT32
    tensors = [_tensor("x", (1, 1, 8, 8), f32), _tensor("w", weights.shape, f32, 1), _tensor("b", bias.shape, f32, 2),
               _tensor("y", (1, weights.shape[0]), f32)]  # fmt: skip
    options = (schema.BuiltinOptions.FullyConnectedOptions, schema.FullyConnectedOptionsT())
    return _model(tensors, schema.BuiltinOperator.FULLY_CONNECTED, [0, 1, 2], 3, buffers, options)


def int8_input_tflite() -> bytes:
    """An int8 (1, 8, 8, 3) input with no quantization parameters, CAST to float32: it loads and runs."""
    kinds = schema.TensorType
    tensors = [_tensor("x", (1, 8, 8, 3), kinds.INT8), _tensor("y", (1, 8, 8, 3), kinds.FLOAT32)]
    return _model(tensors, schema.BuiltinOperator.CAST, [0], 1, [schema.BufferT()])


@pytest.fixture(scope="module")
def linear(digits, tmp_path_factory):
    """A least-squares linear classifier of the 8x8 digits as a .tflite file."""
    x = torch.cat([digits.x_train.flatten(1), torch.ones(len(digits.x_train), 1)], 1)
    w = torch.linalg.lstsq(x, torch.nn.functional.one_hot(digits.y_train, 10).float()).solution.numpy()
    path = tmp_path_factory.mktemp("tfl") / "digits_linear.tflite"
    path.write_bytes(linear_tflite(w[:64].T.copy(), w[64].copy()))
    with torch.no_grad():
        want = float(((digits.x_eval.flatten(1) @ torch.from_numpy(w[:64]) + torch.from_numpy(w[64])).argmax(1)
                      == digits.y_eval).float().mean())  # fmt: skip
    return path, want


def test_a_tflite_build_on_a_suite_dataset_is_validated_torch_free(linear, tmp_path):
    path, want = linear
    out = tmp_path / "bundle"
    args = ["edge", "bundle", "--artifact", str(path), "--data", "digits", "--eval-size", "120", "--out", str(out)]
    assert main(args) == 0
    (entry,) = json.loads((out / "manifest.json").read_text())["models"]
    assert entry["input"] == {"layout": "NCHW", "range": "0..1"} and entry["precision"] == "fp32"
    host = pd.read_csv(out / "host" / "results.csv").set_index("metric")
    assert float(host.loc["clean_acc", "value"]) == pytest.approx(want, abs=0.01) and want > 0.8
    assert host.loc["clean_acc", "format"] == "tflite" and host.loc["clean_acc", "dataset"] == "digits"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "validate", ".", "--no-latency"], cwd=out,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _bad(tmp_path, capsys, *args) -> str:
    assert main(["edge", "bundle", *args, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not (tmp_path / "b").exists()
    return err


def test_an_eval_set_of_another_shape_is_refused(linear, tmp_path, capsys):
    data = tmp_path / "rgb.npz"
    np.savez(data, x=np.zeros((4, 12, 12, 3), dtype=np.uint8), y=np.zeros(4, dtype=np.int64))
    err = _bad(tmp_path, capsys, "--artifact", str(linear[0]), "--data", str(data))
    assert f"{linear[0]}: takes (1, 8, 8) images (C, H, W); {data} holds (3, 12, 12)" in err


def test_an_int8_input_without_scale_and_zero_point_is_refused(tmp_path, capsys):
    path = tmp_path / "int8_input.tflite"
    path.write_bytes(int8_input_tflite())
    data = tmp_path / "rgb.npz"
    np.savez(data, x=np.zeros((4, 8, 8, 3), dtype=np.uint8), y=np.zeros(4, dtype=np.int64))
    err = _bad(tmp_path, capsys, "--artifact", str(path), "--data", str(data), "--input-range", "0..255")
    assert f"{path}: its int8 input has no quantization scale/zero point; re-convert it" in err
