"""Property-based fuzz of the edge validator's manifest handling (hypothesis).

Each example mutates a valid synthetic bundle's manifest (values of every type, hostile paths,
out-of-range numbers, deleted and added keys, forged ``files`` entries that point at symbolic links
leaving the bundle, or a manifest that is not JSON at all) and runs the validator in-process under
an audit hook. The only outcomes allowed: exit 2 with one ``error:`` line and nothing written, or a
run (exit 0 or 1); never another exception, never a file opened outside the bundle. 200 examples
by default; ``ROBUSTBENCH_FUZZ=1`` runs 10,000 (``tests/fuzz_profiles.py``).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections import Counter

import pytest
from fuzz_profiles import FUZZ
from hypothesis import given
from hypothesis import strategies as st
from test_edge_hardening import ADV, MODEL, PRED, make_bundle, run_validator, snapshot

from robustbench_cnn.contract.integrity import sha256
from robustbench_cnn.edge.bundle_format import EVAL_DATA

PATHS = (
    MODEL, PRED, ADV, EVAL_DATA, "models/link.tflite", "data/link.npz", "../outside/evil.tflite", "/etc/passwd",
    "../../etc/passwd", "", ".", "..", "models/", "models//lin.fp32.tflite", "./models/lin.fp32.tflite",
    "models/../models/lin.fp32.tflite", "manifest.json", "validation", "validation/results.csv", "SHA256SUMS",
    "robustbench_cnn/edge/validate.py", "a\x00b", "~/x", "C:\\x", "models\\lin.fp32.tflite", "x" * 300, "models",
)  # fmt: skip
SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([10**400, -1, 0, 1])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.sampled_from(PATHS)
    | st.sampled_from(["fp32", "int8", "pgd-linf-0.1", "lin", "clean", "0" * 64])
)  # fmt: skip
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
COUNTS: Counter = Counter()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    bundle = make_bundle(root)
    (bundle / "models" / "link.tflite").symlink_to(root / "outside" / "evil.tflite")
    (bundle / "data" / "link.npz").symlink_to(root / "outside" / "secret.npz")
    bait = {"models/link.tflite": sha256(root / "outside" / "evil.tflite"),
            "data/link.npz": sha256(root / "outside" / "secret.npz")}  # fmt: skip
    yield bundle, json.loads((bundle / "manifest.json").read_text()), bait
    if FUZZ or COUNTS["examples"]:
        print(f"\nfuzz_bundle: {dict(COUNTS)}")


def _locations(doc, prefix=()):
    """Every (container path, key) in the JSON document."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _locations(value, (*prefix, key))


def _mutate(data, manifest: dict, bait: dict) -> dict:
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        where = data.draw(st.sampled_from([(), *_locations(manifest)]), label="where")
        parent = manifest
        for key in where[:-1]:
            parent = parent[key]
        op = data.draw(st.sampled_from(["replace", "delete", "add", "forge", "number"]), label="op")
        if op == "forge" and isinstance(manifest, dict):  # a consistent forger: a path and its bait's sha256
            path = data.draw(st.sampled_from(PATHS), label="path")
            field = data.draw(st.sampled_from(["file", "predictions", "adversarial"]), label="field")
            models = manifest.get("models")
            if isinstance(models, list) and models and isinstance(models[0], dict):
                models[0][field] = path
            if isinstance(manifest.get("files"), dict):
                manifest["files"][path] = bait.get(path, "0" * 64)
        elif not where:
            if op == "replace":
                manifest = data.draw(VALUES, label="whole")
        elif op == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        elif op == "number":  # near the valid ranges: expectations and tolerances that may still validate
            parent[where[-1]] = data.draw(st.floats(-0.5, 1.5) | st.integers(-2, 12), label="number")
        elif op == "add":
            target = parent[where[-1]]
            if isinstance(target, dict):
                target[data.draw(st.text(max_size=8), label="key")] = data.draw(VALUES, label="value")
        else:
            parent[where[-1]] = data.draw(VALUES, label="value")
    return manifest


@pytest.mark.fuzz
@given(data=st.data())
def test_any_manifest_is_a_clean_error_or_a_run(base, data):
    bundle, manifest, bait = base
    shutil.rmtree(bundle / "validation", ignore_errors=True)
    if data.draw(st.integers(0, 19), label="raw") == 0:  # not JSON, truncated or binary
        raw = data.draw(st.binary(max_size=64) | st.just(json.dumps(manifest)[:100].encode()), label="bytes")
        (bundle / "manifest.json").write_bytes(raw)
    else:
        doc = _mutate(data, copy.deepcopy(manifest), bait)
        (bundle / "manifest.json").write_text(json.dumps(doc))
    before = snapshot(bundle.parent)
    code, out, err, outside = run_validator(bundle)
    COUNTS["examples"] += 1
    COUNTS["outside_reads"] += bool(outside)
    assert outside == [], outside
    if code == 2:
        COUNTS["clean_errors"] += 1
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert snapshot(bundle.parent) == before, "written on error"
    else:
        COUNTS["runs"] += 1
        assert code in (0, 1) and err == "" and "models match" in out, (code, out, err)
