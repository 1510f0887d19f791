"""Property-based fuzzing of model files: user checkpoints and model-cache entries.

Asserted, for any mutation of a valid file (bytes flipped, cut, inserted; JSON values replaced):
- ``load_weights`` either loads (then every weight is finite) or raises one :class:`CheckpointError`
  line; never another exception, never a multi-line message;
- a cache entry whose weights or metadata were changed is never used: ``ModelCache.load`` returns
  ``None`` (retrain) unless the weights it loaded are exactly the ones stored.

200 examples per property by default; ``ROBUSTBENCH_FUZZ=1`` (``nox -s fuzz``) runs 10,000.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from fuzz_profiles import FUZZ  # noqa: F401  (loads the robustbench/fuzz hypothesis profile)
from hypothesis import given
from hypothesis import strategies as st

from robustbench_cnn.errors import CheckpointError
from robustbench_cnn.models import build_model
from robustbench_cnn.train.cache import META, WEIGHTS, ModelCache, load_weights, save_weights


def _model():
    torch.manual_seed(0)
    return build_model("simple_cnn", 10, 1, [0.5], [0.25], {"width": 4, "stages": 1, "convs_per_stage": 1})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    model = _model()
    save_weights(model, root / "weights.safetensors")
    torch.save(model.state_dict(), root / "weights.pt")
    cache = ModelCache(root / "cache")
    cache.store(model, "simple_cnn", "k" * 20, {"recipe": {}, "train_seconds": 1.0})
    return root, {k: v.clone() for k, v in model.state_dict().items()}


def _mutate(data: bytes, ops) -> bytes:
    out = bytearray(data)
    for kind, pos, value in ops:
        i = pos % max(len(out), 1)
        if kind == "flip" and out:
            out[i] ^= 1 + value % 255
        elif kind == "cut":
            del out[i:]
        elif kind == "insert":
            out[i:i] = bytes([value % 256]) * (1 + value % 7)
    return bytes(out)


OPS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert"]), st.integers(0, 2**20), st.integers(0, 2**16)),
               min_size=1, max_size=4)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@pytest.mark.fuzz
@given(name=st.sampled_from(["weights.safetensors", "weights.pt"]), ops=OPS)
def test_a_mutated_checkpoint_loads_or_is_one_clean_line(files, name, ops):
    root, _ = files
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(_mutate((root / name).read_bytes(), ops))
        model = _model()
        try:
            load_weights(model, path)
        except CheckpointError as exc:
            assert "\n" not in str(exc) and str(exc)
            return
        assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


@pytest.mark.fuzz
@given(target=st.sampled_from([WEIGHTS, META]), ops=OPS, meta_value=JSON, meta_key=st.text(max_size=12),
       replace_meta=st.booleans())  # fmt: skip
def test_a_corrupt_cache_entry_is_never_used(files, target, ops, meta_value, meta_key, replace_meta):
    root, stored = files
    with tempfile.TemporaryDirectory() as tmp:
        cache = ModelCache(Path(tmp))
        shutil.copytree(root / "cache", Path(tmp), dirs_exist_ok=True)
        entry = cache.entry("simple_cnn", "k" * 20)
        path = entry / target
        if target == META and replace_meta:
            meta = json.loads(path.read_text())
            if meta_key in meta or not meta_key:
                meta[meta_key or "sha256"] = meta_value
            else:
                meta = meta_value  # the whole document replaced
            path.write_text(json.dumps(meta))
        else:
            path.write_bytes(_mutate(path.read_bytes(), ops))
        model = _model()
        meta = cache.load(model, "simple_cnn", "k" * 20)
        if meta is not None:  # used: only if the weights are exactly the stored ones
            assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.items())
