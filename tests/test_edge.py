"""TFLite exports (LiteRT-Torch) and the edge bundle + torch-free validator, end to end on a tiny run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from robustbench_cnn.cli.bundle import _run_suite, build_bundle, select_exports
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.contract.schema import COLUMNS
from robustbench_cnn.edge.bundle_format import VALIDATOR_FILES
from robustbench_cnn.engine.runner import RunOptions, run_suite
from robustbench_cnn.errors import InputError, RobustBenchError

pytest.importorskip("litert_torch", reason="the 'edge' extra is not installed")

SUITE = """
name = "edge-tiny"
seed = 1
device = "cpu"
[dataset]
name = "digits"
eval_size = 100
[[models]]
name = "cnn"
arch = "simple_cnn"
params = { width = 16, stages = 2 }
train = { epochs = 12, batch_size = 64, lr = 0.1 }
[[evaluations]]
attack = "pgd"
eps = [0.1]
steps = 3
[checks]
enabled = false
[latency]
batch_sizes = [1]
warmup = 1
min_repeats = 3
budget_s = 0.01
[[exports]]
format = "tflite"
precision = "fp32"
[[exports]]
format = "tflite"
precision = "int8"
[corruptions]
corruptions = ["gaussian_noise", "fog"]
severities = [1, 5]
eval_size = 50
"""

# Run the validator the way a Raspberry Pi would: from the bundle's own copy, with torch, pandas and
# scipy made unimportable (an import of any of them raises ImportError).
NO_TORCH = (
    "import runpy, sys\n"
    "for m in ('torch', 'pandas', 'scipy', 'sklearn', 'onnxruntime', 'executorch'): sys.modules[m] = None\n"
    "sys.argv = ['validate'] + sys.argv[1:]\n"
    "runpy.run_module('robustbench_cnn.edge', run_name='__main__')\n"
)


def validate(bundle, *args):
    cmd = [sys.executable, "-c", NO_TORCH, "validate", ".", "--budget-s", "0.05", *args]
    return subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=300)


def fresh_copy(bundle, dest):
    return shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("validation"))


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("edge")
    (root / "edge.toml").write_text(SUITE)
    result = run_suite(load_suite(root / "edge.toml"), RunOptions(root / "out", root / "cache", progress=False))
    assert not result.manifest.get("failed_cells"), result.manifest.get("failed_cells")
    return result


@pytest.fixture(scope="module")
def bundle(edge_run, tmp_path_factory):
    return build_bundle(edge_run.run_dir, tmp_path_factory.mktemp("b") / "bundle")


def test_tflite_exports_meet_parity_and_are_measured(edge_run, export_rows):
    df = edge_run.table
    assert set(df[df.runtime == "tflite"].format) == {"tflite"}
    fp32, int8, torch_clean = export_rows(df, "tflite")
    assert fp32.loc["parity_top1_agreement", "value"] >= 0.995
    assert fp32.loc["parity_max_abs_logit_diff", "value"] < 1e-3
    assert int8.loc["parity_top1_agreement", "value"] >= 0.97
    assert torch_clean - int8.loc["clean_acc", "value"] <= 0.02
    assert int8.loc["size_bytes", "value"] < fp32.loc["size_bytes", "value"] / 2
    assert fp32.loc["latency_ms_p50", "batch_size"] == 1  # batch-1 edge models
    assert {"robust_acc", "throughput"} <= set(int8.index)  # transfer robustness of the deployed model
    assert (edge_run.run_dir / "exports" / "cnn.int8.tflite").is_file()


def test_bundle_validates_with_numpy_and_the_tflite_runtime_only(bundle, edge_run):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {m["precision"] for m in manifest["models"]} == {"fp32", "int8"}
    assert all("models/" in f or "data/" in f or "robustbench_cnn/" in f for f in manifest["files"])
    table = edge_run.table
    recorded = "passed" if (table.metric == "check_parity").any() else "unrecorded"  # runs before check_parity
    assert manifest["left_out"] == [] and {m["parity"] for m in manifest["models"]} == {recorded}
    assert set(manifest["validator"]) == set(VALIDATOR_FILES)
    sha256sum = shutil.which("sha256sum")
    if sha256sum:  # the README's device-side check with the system's tool
        assert subprocess.run([sha256sum, "--check", "--quiet", "SHA256SUMS"], cwd=bundle).returncode == 0
    proc = validate(bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2/2 models match" in proc.stdout
    report = json.loads((bundle / "validation" / "results.json").read_text())
    assert report["validator"].startswith(str(bundle.resolve()))  # the bundle's own copy ran
    assert report["environment"]["runtime"] in ("ai_edge_litert", "tflite_runtime")
    df = pd.read_csv(bundle / "validation" / "results.csv")
    assert tuple(df.columns) == COLUMNS
    assert {"clean_acc", "robust_acc", "size_bytes", "latency_ms_p50"} <= set(df.metric)
    clean = df[df.metric == "clean_acc"].set_index("compression").value
    for entry in manifest["models"]:
        assert clean[entry["compression"]] == pytest.approx(entry["expected"]["clean_acc"])


def test_the_device_measures_the_hosts_corruption_accuracies(bundle, edge_run):
    """The bundle ships the run's corrupted images (regenerated from its seed, the bytes its corruption
    cells measured) and the host's expectations; the torch-free validator reproduces them per model."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    sets = manifest["corruptions"]["sets"]
    assert manifest["corruptions"]["images"] == 50 and len(sets) == 4
    assert manifest["corruptions"]["label"] == "CIFAR-10-C-style, seed 1"
    proc = validate(bundle, "--no-latency")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("mean_corruption_acc") == 2  # printed per model
    df = pd.read_csv(bundle / "validation" / "results.csv")
    device = df[df.metric == "corruption_acc"].set_index(["compression", "attack", "eps"]).value
    host = edge_run.table[(edge_run.table.metric == "corruption_acc") & (edge_run.table.format == "tflite")]
    assert len(device) == len(host) == 2 * 4
    for _, r in host.iterrows():  # the run measured these on the same images through its own LiteRT
        assert device[(r.compression, r.attack, r.eps)] == pytest.approx(r.value, abs=0.02)
    for entry in manifest["models"]:
        for key, want in entry["expected"]["corruption_acc"].items():
            name, severity = sets[key]["corruption"], float(sets[key]["severity"])
            assert device[(entry["compression"], name, severity)] == pytest.approx(want)


def test_a_corruption_expectation_the_device_misses_fails_and_a_missing_one_is_refused(bundle, tmp_path):
    copy = fresh_copy(bundle, tmp_path / "corrupt-expected")
    manifest = json.loads((copy / "manifest.json").read_text())
    key = sorted(manifest["corruptions"]["sets"])[0]
    expected = manifest["models"][0]["expected"]["corruption_acc"]
    expected[key] = (expected[key] + 0.5) % 1.0  # 0.5 away from what the device measures
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = validate(copy, "--no-latency")
    assert proc.returncode == 1 and f"corruption_acc {key}" in proc.stdout
    del manifest["models"][0]["expected"]["corruption_acc"][key]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = validate(copy, "--no-latency")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "models[0].expected.corruption_acc: its keys differ from the bundle's corruptions.sets" in proc.stderr


def test_one_flipped_byte_fails_validation_with_the_file_named(bundle, tmp_path):
    copy = fresh_copy(bundle, tmp_path / "tampered")
    model = copy / "models" / "cnn.int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 3] ^= 0x80
    model.write_bytes(bytes(data))
    proc = validate(copy)
    assert proc.returncode == 2
    assert "models/cnn.int8.tflite: files: sha256 mismatch" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (copy / "validation" / "results.csv").exists()  # nothing was run


def test_a_model_missing_its_expectation_exits_1(bundle, tmp_path):
    copy = fresh_copy(bundle, tmp_path / "changed")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"][0]["expected"]["clean_acc"] -= 0.25
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = validate(copy, "--no-latency")
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "clean_acc" in proc.stdout


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("rm_manifest", "no manifest.json"),
        ("bad_json", "unreadable manifest"),
        ("rm_data", "data/eval.npz: files: missing"),
    ],
)
def test_a_broken_bundle_is_a_one_line_error(bundle, tmp_path, damage, message):
    copy = fresh_copy(bundle, tmp_path / "broken")
    if damage == "rm_manifest":
        (copy / "manifest.json").unlink()
    elif damage == "bad_json":
        (copy / "manifest.json").write_text("{not json")
    else:
        (copy / "data" / "eval.npz").unlink()
    proc = validate(copy)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bundling_a_run_without_tflite_exports_is_an_error(tmp_path, edge_run):
    table = pd.read_csv(edge_run.run_dir / "results.csv")
    table[table.format != "tflite"].to_csv(tmp_path / "results.csv", index=False)
    shutil.copyfile(edge_run.run_dir / "manifest.json", tmp_path / "manifest.json")
    with pytest.raises(RobustBenchError, match=r"no TFLite or ExecuTorch export to bundle \(cnn \[fp32\] failed"):
        build_bundle(tmp_path, tmp_path / "b")


def test_int8_tensors_are_quantized_with_their_own_scale_and_zero_point():
    import numpy as np

    from robustbench_cnn.runtime.tflite_runtime import _dequantize, _quantize

    detail = {"dtype": np.int8, "quantization": (0.05, -3)}
    x = np.linspace(-8, 8, 161, dtype=np.float32)
    q = _quantize(x, detail)
    assert q.dtype == np.int8 and q.min() == -128 and q.max() == 127  # saturates outside the range
    inside = (x > (-128 + 3) * 0.05) & (x < (127 + 3) * 0.05)
    assert np.abs(_dequantize(q, detail)[inside] - x[inside]).max() <= 0.025 + 1e-6
    assert _quantize(x, {"dtype": np.float32, "quantization": (0.0, 0)}) is not x  # float tensors: a cast


def test_edge_bundle_cli_rejects_a_non_run_directory_with_exit_2(tmp_path, capsys):
    from robustbench_cnn.cli.main import main

    assert main(["edge", "bundle", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no readable results.csv" in err and len(err.strip().splitlines()) == 1


def _parity_run(edge_run, dest, int8_parity: float):
    """A copy of the run whose results carry check_parity rows: fp32 passed, int8 ``int8_parity``."""
    run = shutil.copytree(edge_run.run_dir, dest, ignore=shutil.ignore_patterns("report*", "*.png"))
    table = pd.read_csv(run / "results.csv", keep_default_na=False, na_values=[""])
    table = table[table.metric != "check_parity"]
    tfl = table[(table.format == "tflite") & (table.metric == "clean_acc")]
    extra = tfl.assign(metric="check_parity", value=[0.0 if str(c).endswith("int8") else 1.0 for c in tfl.compression],
                       ci_low=None, ci_high=None)  # a check has no interval  # fmt: skip
    extra.loc[extra.value == 0.0, "value"] = int8_parity
    pd.concat([table, extra]).to_csv(run / "results.csv", index=False)
    return run


def test_an_export_that_failed_parity_is_left_out_and_listed_unless_included(edge_run, tmp_path, caplog):
    run = _parity_run(edge_run, tmp_path / "run", int8_parity=0.0)
    with caplog.at_level("WARNING", logger="robustbench_cnn.cli.bundle"):
        out = build_bundle(run, tmp_path / "b1")
    reason = "failed its parity check (check_parity = 0); --include-failed-parity bundles it"
    assert f"left out cnn [int8]: {reason}" in caplog.messages
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["left_out"] == [{"model": "cnn", "precision": "int8", "reason": reason}]
    assert [(m["precision"], m["parity"]) for m in manifest["models"]] == [("fp32", "passed")]
    proc = validate(out, "--no-latency")
    assert proc.returncode == 0 and "1/1 models match" in proc.stdout, proc.stdout + proc.stderr
    included = json.loads(
        (build_bundle(run, tmp_path / "b2", include_failed_parity=True) / "manifest.json").read_text()
    )
    assert included["left_out"] == []
    assert sorted((m["precision"], m["parity"]) for m in included["models"]) == [("fp32", "passed"), ("int8", "failed")]


SELECT_SUITE = """
name = "sel"
[dataset]
name = "digits"
[[models]]
name = "a"
arch = "simple_cnn"
[[models]]
name = "b"
arch = "simple_cnn"
[[exports]]
format = "tflite"
precision = "fp32"
[[exports]]
format = "tflite"
precision = "int8"
"""


def test_export_selection_follows_check_parity_and_names_every_export_left_out(tmp_path):
    (tmp_path / "sel.toml").write_text(SELECT_SUITE)
    spec = load_suite(tmp_path / "sel.toml").spec
    (tmp_path / "exports").mkdir()
    for name in ("a.tflite", "a.int8.tflite", "b.int8.tflite"):
        (tmp_path / "exports" / name).write_bytes(b"x")
    rows = [
        ("a", "none", "clean_acc", 0.9),
        ("a", "none", "check_parity", 1.0),
        ("a", "int8", "clean_acc", 0.5),
        ("a", "int8", "check_parity", 0.0),
        ("b", "int8", "clean_acc", 0.9),
    ]  # b fp32: no rows at all
    table = pd.DataFrame([{"model": m, "compression": c, "format": "tflite", "metric": k, "value": v}
                          for m, c, k, v in rows])  # fmt: skip
    failed = {"model": "b", "cell": "export(format=tflite,precision=fp32)", "error": "LoweringError: no\nway"}
    selected, left = select_exports(tmp_path, table, spec, {"failed_cells": [failed]})
    assert selected == [("a", "tflite", False, "passed"), ("b", "tflite", True, "unrecorded")]
    assert left == [
        {"model": "a", "precision": "int8", "reason": "failed its parity check (check_parity = 0); "
                                                      "--include-failed-parity bundles it"},
        {"model": "b", "precision": "fp32", "reason": "failed to export (no result rows): LoweringError: no way"},
    ]  # fmt: skip
    selected, left = select_exports(tmp_path, table, spec, {}, include_failed_parity=True)
    assert ("a", "tflite", True, "failed") in selected and [d["model"] for d in left] == ["b"]


def _suite_run(tmp_path):
    (tmp_path / "sel.toml").write_text(SELECT_SUITE)
    run = tmp_path / "run"
    run.mkdir()
    loaded = load_suite(tmp_path / "sel.toml")
    return run, {"suite_path": str(loaded.path), "suite_sha256": loaded.sha256}


def test_the_run_copy_of_the_suite_is_read_and_must_match_its_sha256(tmp_path):
    run, manifest = _suite_run(tmp_path)
    (run / "suite.toml").write_text(SELECT_SUITE)
    (tmp_path / "sel.toml").write_text(SELECT_SUITE.replace('name = "b"', 'name = "c"'))  # edited: not read
    loaded = _run_suite(run, manifest)
    assert [m.name for m in loaded.spec.models] == ["a", "b"] and loaded.path == tmp_path / "sel.toml"
    (run / "suite.toml").write_text(SELECT_SUITE + "\n# edited\n")
    with pytest.raises(InputError) as err:
        _run_suite(run, manifest)
    assert str(err.value) == (
        f"{run / 'suite.toml'}: suite_sha256: differs from the run's manifest.json (edited since); bundle a run made "
        "from the current suite file (re-run it), or restore the suite as it was"
    )


def test_without_a_copy_the_recorded_suite_is_used_only_when_unedited(tmp_path):
    run, manifest = _suite_run(tmp_path)
    assert [m.name for m in _run_suite(run, manifest).spec.models] == ["a", "b"]
    (tmp_path / "sel.toml").write_text(SELECT_SUITE + "\n# edited\n")
    with pytest.raises(InputError, match=r"sel.toml: suite_sha256: differs from .* and the run has no suite.toml copy"):
        _run_suite(run, manifest)
