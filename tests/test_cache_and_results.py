import json
import math
import threading

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from robustbench_cnn.contract.results import COLUMNS, Row, frame, read_csv, write_csv
from robustbench_cnn.errors import CheckpointError
from robustbench_cnn.locks import LockTimeout
from robustbench_cnn.metrics import expected_calibration_error, macro_f1
from robustbench_cnn.models import build_model
from robustbench_cnn.train.cache import ModelCache, cache_key, code_fingerprint, load_weights, save_weights, sha256_file


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


def test_editing_a_factory_changes_the_cache_key(tmp_path):
    src = "from torch import nn\n\ndef net(num_classes: int, in_channels: int = 3):\n    return nn.Linear({n}, 10)\n"
    (tmp_path / "edited_factory_f.py").write_text(src.format(n=64))
    (tmp_path / "plugin_g.py").write_text("X = 1\n")
    arch, identity = "edited_factory_f:net", {"arch": "edited_factory_f:net", "params": {}, "seed": 0}
    before = code_fingerprint(arch, (), tmp_path)
    with_plugin = code_fingerprint(arch, ("plugin_g",), tmp_path)
    assert before == code_fingerprint(arch, (), tmp_path) and with_plugin != before
    (tmp_path / "edited_factory_f.py").write_text(src.format(n=64) + "# same parameters, different code\n")
    after = code_fingerprint(arch, (), tmp_path)
    assert after != before
    assert cache_key({**identity, "code": before}) != cache_key({**identity, "code": after})
    (tmp_path / "plugin_g.py").write_text("X = 2\n")
    assert code_fingerprint(arch, ("plugin_g",), tmp_path) not in (with_plugin, after)
    assert code_fingerprint("simple_cnn") != code_fingerprint("resnet")


def _structure_garbage(entry):
    """Weights whose 'structure' metadata is not a structure, with a matching sha256 in meta.json."""
    m = model(0)
    save_weights(m, entry / "model.safetensors", metadata={"structure": '["not", "a", "structure"]'})
    _rehash(entry)


def _nan_weights(entry):
    state = {k: v.clone() for k, v in model(0).state_dict().items()}
    state["net.0.weight"].fill_(float("nan"))
    save_file(state, entry / "model.safetensors")
    _rehash(entry)


def _rehash(entry):
    meta = json.loads((entry / "meta.json").read_text())
    meta["weights_sha256"] = sha256_file(entry / "model.safetensors")
    (entry / "meta.json").write_text(json.dumps(meta))


def _dir_instead_of_weights(entry):
    (entry / "model.safetensors").unlink()
    (entry / "model.safetensors").mkdir()


def _dir_instead_of_meta(entry):
    (entry / "meta.json").unlink()
    (entry / "meta.json").mkdir()


DAMAGE = {
    "meta_is_a_list": lambda e: (e / "meta.json").write_text("[1, 2]"),
    "meta_invalid_utf8": lambda e: (e / "meta.json").write_bytes(b'{"key": "\xff\xfe"}'),
    "meta_is_a_directory": _dir_instead_of_meta,
    "weights_are_a_directory": _dir_instead_of_weights,
    "weights_of_another_model": lambda e: save_weights(model(7), e / "model.safetensors"),
    "meta_of_another_key": lambda e: (e / "meta.json").write_text(
        (e / "meta.json").read_text().replace('"key": "', '"key": "x')
    ),
    "meta_without_sha256": lambda e: (e / "meta.json").write_text('{"train_seconds": 1}'),
    "malformed_structure_metadata": _structure_garbage,
    "nan_weights": _nan_weights,
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_corrupt_cache_entry_is_reported_retrained_and_never_used(tmp_path, caplog, damage):
    cache, key = ModelCache(tmp_path), cache_key({"arch": "simple_cnn", "seed": 1})
    cache.store(model(0), "simple_cnn", key, {"train_seconds": 1.5})
    damage(cache.entry("simple_cnn", key))
    fresh = model(3)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    assert cache.load(fresh, "simple_cnn", key) is None
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())  # untouched: retrained from here
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "unusable" in warnings[0] and "\n" not in warnings[0]
    cache.store(model(3), "simple_cnn", key, {"train_seconds": 2.0})  # the retrained weights replace it
    again = model(4)
    assert cache.load(again, "simple_cnn", key)["train_seconds"] == 2.0
    assert torch.equal(again.net[0].weight, model(3).net[0].weight)


def test_arch_sources_make_portable_entry_names(tmp_path):
    assert ModelCache(tmp_path).entry("torchvision:resnet18", "abc").name == "torchvision_resnet18-abc"


def test_nan_weights_are_never_stored(tmp_path):
    m = model(0)
    with torch.no_grad():
        m.net[0].weight.fill_(float("inf"))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        save_weights(m, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_the_cache_lock_excludes_other_holders(tmp_path):
    cache = ModelCache(tmp_path)
    held, release = threading.Event(), threading.Event()

    def holder():
        with cache.lock("simple_cnn", "k1"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(LockTimeout, match="stayed locked"), cache.lock("simple_cnn", "k1", timeout_s=0.2):
            pass
        with cache.lock("simple_cnn", "other-key", timeout_s=0.2):  # other keys are free
            pass
    finally:
        release.set()
        thread.join()
    with cache.lock("simple_cnn", "k1", timeout_s=1):
        pass
