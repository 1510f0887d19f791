"""The model cache after a writer was killed mid-write: its torn temporary files are swept by the
next store of that key (under the key's lock), and an entry without its ``meta.json`` is retrained."""

from __future__ import annotations

import torch

from robustbench_cnn.models import build_model
from robustbench_cnn.train.cache import ModelCache, cache_key


def model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("simple_cnn", 10, 1, [0.5], [0.5], {"width": 4}).eval()


def test_a_killed_writers_torn_files_are_swept_and_its_entry_retrained(tmp_path):
    cache, key = ModelCache(tmp_path), cache_key({"arch": "simple_cnn", "seed": 5})
    folder = cache.entry("simple_cnn", key)
    folder.mkdir(parents=True)
    torn = [folder / ".model.safetensors.k1ll3d.tmp", folder / ".meta.json.k1ll3d.tmp"]
    for path in torn:
        path.write_bytes(b"\x00torn write")
    (folder / "model.safetensors").write_bytes(b"\x00half")  # the rename happened, meta.json never came
    with cache.lock("simple_cnn", key):
        assert cache.load(model(1), "simple_cnn", key) is None  # unusable: a miss, retrained
        cache.store(model(1), "simple_cnn", key, {"train_seconds": 1.0})
    assert not any(p.exists() for p in torn)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.safetensors"]
    loaded = model(2)
    assert cache.load(loaded, "simple_cnn", key)["train_seconds"] == 1.0
    assert torch.equal(loaded.net[0].weight, model(1).net[0].weight)
