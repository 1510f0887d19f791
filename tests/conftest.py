"""Shared fixtures: the digits data at its native 8x8 size and a tiny CNN trained on it in seconds."""

from __future__ import annotations

import pytest
import torch

from robustbench_cnn.config.spec import DatasetSpec, TrainSpec
from robustbench_cnn.data import load_dataset
from robustbench_cnn.models import build_model
from robustbench_cnn.train.loop import train


@pytest.fixture(scope="session")
def digits():
    return load_dataset(DatasetSpec(name="digits", eval_size=120), None)


@pytest.fixture(scope="session")
def tiny_model(digits):
    """simple_cnn, width 8, trained 15 epochs on 8x8 digits: accurate enough for attacks to matter."""
    torch.manual_seed(0)
    model = build_model("simple_cnn", 10, 1, digits.mean, digits.std, {"width": 8, "stages": 2})
    train(model, digits.x_train, digits.y_train, TrainSpec(epochs=15, lr=0.1, batch_size=64), seed=0, progress=False)
    return model.eval()


TINY_SUITE = """
name = "tiny"
seed = 3
device = "cpu"

[dataset]
name = "digits"
train_size = 300
eval_size = 60

[[models]]
name = "cnn"
arch = "simple_cnn"
params = {{ width = 4, stages = 2, convs_per_stage = 1 }}
train = {{ epochs = 2, batch_size = 64, lr = 0.05 }}
{extra_models}

[[evaluations]]
attack = "pgd"
eps = [0.0, 0.1]
steps = 3

[latency]
batch_sizes = [1]
warmup = 1
min_repeats = 3
budget_s = 0.01
"""


@pytest.fixture
def tiny_suite(tmp_path):
    """Write a tiny suite file; ``extra_models`` adds TOML for more ``[[models]]`` entries."""

    def write(extra_models: str = "", name: str = "tiny.toml"):
        path = tmp_path / name
        path.write_text(TINY_SUITE.format(extra_models=extra_models))
        return path

    return write


@pytest.fixture
def export_rows():
    """``(fp32 rows, int8 rows, torch clean accuracy)`` of one export format in a results table; the
    rows of each precision indexed by metric."""

    def split(df, fmt: str):
        rows = df[df.format == fmt]
        assert set(rows.compression) == {"none", "int8"}
        fp32 = rows[rows.compression == "none"].set_index("metric")
        int8 = rows[rows.compression == "int8"].set_index("metric")
        torch_clean = df[(df.runtime == "torch") & (df.metric == "clean_acc")].value.item()
        return fp32, int8, torch_clean

    return split
