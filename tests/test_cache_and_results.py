import math

import pandas as pd
import pytest
import torch

from robustbench_cnn.errors import CheckpointError
from robustbench_cnn.metrics import expected_calibration_error, macro_f1
from robustbench_cnn.models import build_model
from robustbench_cnn.suite.results import COLUMNS, Row, frame, read_csv, write_csv
from robustbench_cnn.train.cache import ModelCache, cache_key, load_weights, save_weights


def model(seed=0):
    torch.manual_seed(seed)
    return build_model("simple_cnn", 10, 1, [0.5], [0.5], {"width": 4}).eval()


def test_safetensors_round_trip(tmp_path):
    a, b = model(0), model(1)
    save_weights(a, tmp_path / "w.safetensors")
    load_weights(b, tmp_path / "w.safetensors")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    "damage",
    [lambda p: p.write_bytes(b"\x00" * 10), lambda p: p.write_bytes(p.read_bytes()[:-100]), lambda p: p.unlink()],
)
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "w.safetensors"
    save_weights(model(), path)
    damage(path)
    with pytest.raises(CheckpointError, match=str(path)) as info:
        load_weights(model(), path)
    assert "\n" not in str(info.value)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    save_weights(build_model("resnet", 10, 1, [0.5], [0.5], {"depth": 8}), tmp_path / "r.safetensors")
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_weights(model(), tmp_path / "r.safetensors")


def test_cache_hit_miss_and_corrupt_entry(tmp_path, caplog):
    cache, key = ModelCache(tmp_path), cache_key({"arch": "simple_cnn", "seed": 0})
    assert cache.load(model(), "simple_cnn", key) is None
    cache.store(model(0), "simple_cnn", key, {"train_seconds": 1.5})
    fresh = model(1)
    assert cache.load(fresh, "simple_cnn", key)["train_seconds"] == 1.5
    assert torch.equal(fresh(torch.ones(1, 1, 8, 8)), model(0)(torch.ones(1, 1, 8, 8)))
    (cache.entry("simple_cnn", key) / "model.safetensors").write_bytes(b"garbage")
    assert cache.load(model(), "simple_cnn", key) is None
    assert "unusable" in caplog.text


def test_cache_key_depends_on_every_input():
    base = {"arch": "a", "seed": 0, "train": {"lr": 0.1}}
    assert cache_key(base) == cache_key(dict(reversed(base.items())))
    assert cache_key(base) != cache_key({**base, "seed": 1})
    assert cache_key(base) != cache_key({**base, "train": {"lr": 0.2}})


def test_rows_refuse_unknown_metrics_and_nan():
    with pytest.raises(ValueError, match="vocabulary"):
        Row(run_id="r", suite="s", dataset="d", model="m", arch="a", metric="accuracy", value=1.0)
    with pytest.raises(ValueError, match="not finite"):
        Row(run_id="r", suite="s", dataset="d", model="m", arch="a", metric="clean_acc", value=math.nan)


def test_csv_has_contract_columns_and_empty_cells(tmp_path):
    rows = [
        Row(run_id="r", suite="s", dataset="d", model="m", arch="a", metric="clean_acc", value=0.5, n=10),
        Row(run_id="r", suite="s", dataset="d", model="m", arch="a", metric="robust_acc", value=0.25, n=10,
            attack="pgd", norm="linf", eps=8 / 255),
    ]  # fmt: skip
    write_csv(frame(rows), tmp_path / "results.csv")
    text = (tmp_path / "results.csv").read_text()
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert "nan" not in text.lower() and "<NA>" not in text
    df = read_csv(tmp_path / "results.csv")
    assert pd.isna(df.loc[0, "eps"]) and df.loc[1, "eps"] == pytest.approx(8 / 255, rel=1e-9)
    assert df["n"].tolist() == [10, 10]


def test_ece_and_f1():
    y = torch.tensor([0, 1, 1, 0])
    perfect = torch.eye(2)[y]
    assert expected_calibration_error(perfect, y) == pytest.approx(0.0)
    overconfident = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # half right at confidence 1
    assert expected_calibration_error(overconfident, y) == pytest.approx(0.5)
    assert macro_f1(y, y, 2) == 1.0
    assert macro_f1(torch.zeros(4, dtype=torch.long), y, 2) == pytest.approx((2 / 3 + 0) / 2)
