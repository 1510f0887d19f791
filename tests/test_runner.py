"""End to end on a tiny suite: results contract, manifest, cache reuse, failures keep results."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.contract.results import COLUMNS, METRICS, read_csv
from robustbench_cnn.engine.runner import RunOptions, run_suite
from robustbench_cnn.errors import CheckpointError
from robustbench_cnn.report.summary import finish_run


def replace_kind(monkeypatch, kind: str, run) -> None:
    """Swap a registered cell kind's executor for this test."""
    import dataclasses

    from robustbench_cnn.engine.kinds import CELL_KINDS

    monkeypatch.setitem(CELL_KINDS._entries, kind, dataclasses.replace(CELL_KINDS.get(kind), run=run))


def options(tmp_path, **kw):
    return RunOptions(out_root=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False, finish=finish_run, **kw)


def test_run_writes_the_results_contract(tmp_path, tiny_suite):
    result = run_suite(load_suite(tiny_suite()), options(tmp_path))
    run_dir = result.run_dir
    df = read_csv(run_dir / "results.csv")
    assert list(df.columns) == list(COLUMNS)
    assert set(df.metric) <= METRICS
    assert {"clean_acc", "macro_f1", "ece", "robust_acc", "params", "macs", "size_bytes", "latency_ms_p50"} <= set(
        df.metric
    )
    clean = df.loc[df.metric == "clean_acc", "value"].item()
    robust = df[(df.metric == "robust_acc") & (df.attack == "pgd")].set_index("eps")["value"]
    assert robust[0.0] == clean and robust[0.1] <= clean
    assert (df.run_id == result.manifest["run_id"]).all() and (df.suite == "tiny").all()

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 3
    assert manifest["models"]["cnn"]["cache"] == "miss"
    assert {"data", "train", "clean", "attack", "checks", "latency"} <= set(manifest["stage_seconds"])
    assert manifest["environment"]["packages"]["torch"] and manifest["suite_sha256"]
    summary = (run_dir / "summary.md").read_text()
    assert "| cnn " in summary and "pgd-linf @0.1 %" in summary and "nan" not in summary
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()


def test_rerun_hits_the_cache_and_reproduces_exactly(tmp_path, tiny_suite):
    suite = load_suite(tiny_suite())
    first = run_suite(suite, options(tmp_path))
    second = run_suite(suite, options(tmp_path))
    assert second.manifest["models"]["cnn"]["cache"] == "hit"
    assert "train" not in second.manifest["stage_seconds"]
    acc = lambda r: r.table[r.table.metric.isin(["clean_acc", "robust_acc", "ece"])].value.tolist()  # noqa: E731
    assert acc(first) == acc(second)
    assert (second.run_dir.parent / "latest").resolve() == second.run_dir.resolve()


def test_a_broken_checkpoint_is_refused_before_any_run_directory_or_training(tmp_path, tiny_suite):
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint")
    path = tiny_suite('[[models]]\nname = "loaded"\narch = "simple_cnn"\ncheckpoint = "broken.safetensors"\n')
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        run_suite(load_suite(path), options(tmp_path, run_id="r1"))
    assert not (tmp_path / "out" / "tiny" / "r1").exists()  # nothing written, nothing trained
    assert not any((tmp_path / "cache").glob("*")) if (tmp_path / "cache").is_dir() else True


def test_a_failing_cell_is_recorded_and_the_rest_runs(tmp_path, tiny_suite, monkeypatch, capsys):
    def broken(*args):
        raise FloatingPointError("loss is nan")

    replace_kind(monkeypatch, "latency", broken)
    code = main(["run", str(tiny_suite()), "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 1 and "1 cell(s) failed" in capsys.readouterr().err
    run_dir = max((tmp_path / "o" / "tiny").glob("*T*Z-*"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete_with_errors"
    assert manifest["failed_cells"][0]["cell"] == "latency" and "loss is nan" in manifest["failed_cells"][0]["error"]
    df = read_csv(run_dir / "results.csv")
    assert "robust_acc" in set(df.metric) and "latency_ms_p50" not in set(df.metric)


def test_dependents_of_a_failed_cell_are_skipped(tmp_path, tiny_suite, monkeypatch):
    def broken(*args):
        raise MemoryError("out of memory")

    replace_kind(monkeypatch, "clean", broken)
    result = run_suite(load_suite(tiny_suite()), options(tmp_path))
    failed = {f["cell"]: f["error"] for f in result.manifest["failed_cells"]}
    assert failed["clean"] == "MemoryError: out of memory"
    assert all("depends on failed" in e for c, e in failed.items() if c.startswith("attack"))
    assert "latency_ms_p50" in set(result.table.metric)


def test_checkpoint_models_are_loaded_not_trained(tmp_path, tiny_suite):
    first = run_suite(load_suite(tiny_suite()), options(tmp_path))
    weights = first.manifest["models"]["cnn"]["weights"] + "/model.safetensors"
    extra = f'[[models]]\nname = "again"\narch = "simple_cnn"\ncheckpoint = "{weights}"\n'
    extra += "params = { width = 4, stages = 2, convs_per_stage = 1 }\n"
    second = run_suite(load_suite(tiny_suite(extra)), options(tmp_path))
    t = second.table
    clean = t[t.metric == "clean_acc"].set_index("model").value
    assert clean["again"] == clean["cnn"]
    assert second.manifest["models"]["again"]["source"] == "checkpoint"


def test_cli_run_prints_the_summary(tmp_path, tiny_suite, capsys):
    code = main(["run", str(tiny_suite()), "--out", str(tmp_path / "o"), "--seed", "4", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "# tiny" in out and "results:" in out
    run_dirs = [p for p in (tmp_path / "o" / "tiny").iterdir() if p.name != "latest"]
    assert json.loads((run_dirs[0] / "manifest.json").read_text())["seed"] == 4
    assert isinstance(pd.read_csv(run_dirs[0] / "results.csv"), pd.DataFrame)


def test_help_is_instant_and_imports_no_torch():
    code = (
        "import sys; from robustbench_cnn.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    help_out = subprocess.run([sys.executable, "-m", "robustbench_cnn", "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "run" in help_out.stdout
