"""A user checkpoint that cannot be used is one line and exit 2 before a run directory exists.

It used to exit 1 after creating a run directory marked ``failed`` (the runner loads checkpoints
only once it has made the run directory and loaded the data)."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from robustbench_cnn.cli.main import main

SUITE = """
name = "ckpt"
device = "cpu"
[dataset]
name = "digits"
train_size = 100
eval_size = 20
[[models]]
name = "a"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
checkpoint = "weights.bin"
[[evaluations]]
attack = "fgsm"
eps = [0.1]
[checks]
enabled = false
[latency]
enabled = false
"""


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def _garbage(path):
    path.write_bytes(b"not a checkpoint at all")


def _truncated(path):
    save_file({"net.w": torch.zeros(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:200])


def _bad_header(path):
    path.write_bytes((40).to_bytes(8, "little") + b"{" + b"\xff" * 39 + b"\x00" * 16)


def _nan(path):
    save_file({"net.w": torch.full((4,), float("nan"))}, str(path))


def _pickled_code(path):
    path.write_bytes(pickle.dumps({"net.w": Payload()}))


CASES = {"garbage": (_garbage, "is neither safetensors nor a torch.save state dict"),
         "truncated": (_truncated, "is corrupt: SafetensorError"),
         "bad-header": (_bad_header, "is corrupt: SafetensorError"),
         "nan": (_nan, "net.w holds NaN or infinite values"),
         "pickled-code": (_pickled_code, "holds Python objects beyond tensors and was refused")}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_an_unusable_checkpoint_is_one_line_exit_2_before_any_run_directory(tmp_path, capsys, case):
    make, expected = CASES[case]
    suite = tmp_path / "ckpt.toml"
    suite.write_text(SUITE)
    make(tmp_path / "weights.bin")
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "pickled code ran" not in captured.out + captured.err
    err = captured.err
    assert err.count("\n") == 1 and err.startswith(f"robustbench-cnn: error: checkpoint {tmp_path / 'weights.bin'}")
    assert expected in err, err
    assert not (out / "ckpt").exists()


def test_a_checkpoint_that_does_not_fit_its_model_is_refused_before_any_run_directory(tmp_path, capsys):
    suite = tmp_path / "ckpt.toml"
    suite.write_text(SUITE)
    save_file({"net.w": torch.zeros(4)}, str(tmp_path / "weights.bin"))  # readable and finite, wrong keys
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    assert not (out / "ckpt").exists()
