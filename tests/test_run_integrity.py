"""Run-state faults from the hardening issue: twin models keep their own results, a corrupt history
store or stored cell never stops a run."""

from __future__ import annotations

import json

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.engine.runner import RunOptions, run_suite
from robustbench_cnn.report.summary import finish_run

TWINS = """
[[models]]
name = "twin"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
train = { epochs = 2, batch_size = 64, lr = 0.05 }
"""


def test_two_models_with_one_recipe_share_weights_but_not_results(tmp_path, tiny_suite):
    """Used to write model cnn's rows twice and none for the twin, and report the run complete."""
    path = tiny_suite(TWINS)
    result = run_suite(
        load_suite(path), RunOptions(tmp_path / "out", tmp_path / "cache", progress=False, finish=finish_run)
    )
    assert result.manifest["status"] == "complete"
    models = result.manifest["models"]
    assert models["cnn"]["key"] == models["twin"]["key"]  # one cache entry, trained once
    table = read_csv(result.run_dir / "results.csv")
    per_model = table.groupby("model").size()
    assert set(per_model.index) == {"cnn", "twin"} and per_model["cnn"] == per_model["twin"]
    assert (result.run_dir / "summary.md").is_file()


def test_a_corrupt_history_store_or_cell_file_never_stops_a_run(tmp_path, tiny_suite):
    path = tiny_suite()
    out = tmp_path / "out"
    out.mkdir()
    (out / "history.sqlite").write_bytes(b"this is not a database" * 100)
    args = ["run", str(path), "--out", str(out), "--no-progress"]
    assert main(args) == 0  # the corrupt store is moved aside, a new one started
    assert list(out.glob("history.sqlite.corrupt-*")) and (out / "history.sqlite").is_file()
    run_dir = next(p for p in (out / "tiny").iterdir() if p.is_dir() and p.name != "latest")
    cell = sorted((run_dir / "cells").glob("*.csv"))[0]
    cell.write_text("garbage,\n\x00\x01")  # a stored cell that cannot be read
    assert main([*args, "--resume", str(run_dir)]) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["cells"]["computed"] == 1  # that cell only, again
    read_csv(cell)  # stored again, readable
