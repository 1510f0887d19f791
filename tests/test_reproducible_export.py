"""ONNX exports carry no machine paths (identical bytes from any checkout), and certification on
ONNX Runtime refuses an export whose batch dimension was fixed."""

import logging
import sys
from pathlib import Path

import torch
from torch import nn

import robustbench_cnn
from robustbench_cnn.defenses.smoothing import Smoothed
from robustbench_cnn.export.onnx import export_onnx
from robustbench_cnn.models import build_model


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("simple_cnn", 10, 1, torch.zeros(1), torch.ones(1), {"width": 4, "stages": 2}).eval()


def test_onnx_export_has_no_absolute_paths_and_is_byte_identical(tmp_path):
    model = small_model()
    a = export_onnx(model, (1, 8, 8), tmp_path / "a.onnx").read_bytes()
    b = export_onnx(model, (1, 8, 8), tmp_path / "elsewhere" / "b.onnx").read_bytes()
    assert a == b
    package = Path(robustbench_cnn.__file__).resolve().parent.parent
    for path in {str(package), sys.prefix, str(Path.home()), str(tmp_path)}:
        assert path.encode() not in a, path
    assert b"stack_trace" not in a


class LenNet(nn.Module):
    """A forward that calls len(x): torch.export specializes the batch dimension."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x).reshape(len(x), -1)


def test_smoothing_falls_back_to_torch_when_the_export_batch_is_fixed(caplog):
    model = LenNet(small_model())
    smoothed = Smoothed(model, 10, 0.25, batch_size=64, runtime="onnxruntime")
    x = torch.rand(1, 8, 8)
    with caplog.at_level(logging.WARNING):
        counts = smoothed.sample_counts(x, 100, torch.Generator().manual_seed(0))
    assert int(counts.sum()) == 100
    assert "fixed batch" in caplog.text
    reference = Smoothed(model, 10, 0.25, batch_size=64, runtime="torch")
    assert torch.equal(counts, reference.sample_counts(x, 100, torch.Generator().manual_seed(0)))
