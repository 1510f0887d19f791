"""Kill a run with SIGKILL in the middle of its evaluation, resume it, get the same table."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from robustbench_cnn.config.load import load_suite
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.engine.runner import RunOptions, run_suite
from robustbench_cnn.engine.store import CellStore

SUITE = """
name = "resume"
seed = 1
device = "cpu"
[dataset]
name = "digits"
train_size = 300
eval_size = 200
[[models]]
name = "a"
arch = "simple_cnn"
params = { width = 8, stages = 2 }
train = { epochs = 3 }
[[models]]
name = "b"
arch = "resnet"
params = { depth = 8, width = 0.5 }
train = { epochs = 2 }
[[evaluations]]
attack = "pgd"
eps = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2]
steps = 10
[[evaluations]]
attack = "fgsm"
eps = [0.1]
[checks]
eval_size = 50
[latency]
enabled = false
"""

STABLE = ["model", "metric", "attack", "norm", "eps", "value", "n"]


def table(run_dir):
    df = read_csv(run_dir / "results.csv")
    return df[STABLE].sort_values(STABLE[:5]).reset_index(drop=True)


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    suite = tmp_path / "resume.toml"
    suite.write_text(SUITE)
    cache = tmp_path / "cache"
    # uninterrupted reference (also fills the model cache, as a nightly's earlier run would)
    reference = run_suite(load_suite(suite), RunOptions(tmp_path / "ref", cache, progress=False))

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "robustbench_cnn", "run", str(suite), "--out", str(out), "--cache-dir", str(cache),
           "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    store = None
    while time.time() < deadline and proc.poll() is None:
        runs = list((out / "resume").glob("*T*Z-*")) if (out / "resume").exists() else []
        if runs and (store := CellStore(runs[0])).count() >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the suite slower"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = store.count()
    total = reference.manifest["cells"]["computed"]
    assert 4 <= done_before < total

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    run_dir = store.dir.parent
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"]
    assert manifest["cells"] == {"computed": total - done_before, "reused": done_before, "failed": 0}
    assert all(m["cache"] == "hit" for m in manifest["models"].values())
    pd.testing.assert_frame_equal(table(run_dir), table(reference.run_dir))


def test_resuming_a_finished_run_recomputes_nothing(tmp_path):
    suite = tmp_path / "resume.toml"
    suite.write_text(SUITE.replace("eps = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2]", "eps = [0.1]"))
    opts = RunOptions(tmp_path / "out", tmp_path / "cache", progress=False)
    first = run_suite(load_suite(suite), opts)
    again = run_suite(load_suite(suite), RunOptions(tmp_path / "out", tmp_path / "cache", progress=False,
                                                    resume=first.run_dir))  # fmt: skip
    assert again.manifest["cells"]["computed"] == 0 and again.manifest["cells"]["reused"] > 0
    assert again.run_dir == first.run_dir
    pd.testing.assert_frame_equal(table(first.run_dir), table(again.run_dir))


def test_a_second_process_on_the_same_run_exits_2_and_loses_nothing(tmp_path):
    """Two --resume of one run at once: the second gets one line and exit 2 (it used to crash)."""
    from robustbench_cnn.errors import InputError
    from robustbench_cnn.locks import file_lock

    suite = tmp_path / "resume.toml"
    suite.write_text(SUITE.replace("train = { epochs = 3 }", "train = { epochs = 1 }"))
    run_dir = tmp_path / "out" / "resume" / "20260101T000000Z-abcdef"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": run_dir.name, "suite": "resume", "models": {}}))
    before = (run_dir / "manifest.json").read_bytes()
    opts = RunOptions(tmp_path / "out", tmp_path / "cache", progress=False, resume=run_dir)
    with file_lock(run_dir / ".lock"):  # what the first process holds while it runs
        try:
            run_suite(load_suite(suite), opts)
        except InputError as exc:
            assert "another robustbench-cnn process is running this run" in str(exc) and exc.exit_code == 2
        else:
            raise AssertionError("the second process ran")
    assert (run_dir / "manifest.json").read_bytes() == before
