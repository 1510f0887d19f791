"""A native crash is one failed cell, not a dead run: ``robustbench-cnn run`` runs the suite in a
child; a cell that segfaults the child twice is recorded in ``failed_cells`` with its signal and
skipped with its dependants, and every other cell is computed (``suite/crashes.py``)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
import ctypes
from pathlib import Path
from robustbench_cnn.attacks import register_attack
from robustbench_cnn.attacks.builtin import pgd

COUNT = Path(__file__).with_name("segv_calls")


@register_attack("pgd_segv", norms=("linf",))
def pgd_segv(model, eps, norm="linf", steps=10, step_size=None, num_classes=10):
    """Reads address 0 (SIGSEGV) every time it is built: a bug in native code."""
    COUNT.write_text(str(int(COUNT.read_text()) + 1 if COUNT.exists() else 1))
    ctypes.string_at(0)
    return pgd(model, eps, norm, steps, step_size, num_classes)
'''

SUITE = """
name = "crash"
seed = 0
device = "cpu"
plugins = ["segv_plugin"]

[dataset]
name = "digits"
train_size = 200
eval_size = 40

[[models]]
name = "cnn"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
train = { epochs = 1, batch_size = 64, lr = 0.05 }

[[evaluations]]
attack = "pgd"
eps = [0.1]
steps = 3

[[evaluations]]
attack = "pgd_segv"
eps = [0.1]
steps = 3

[ensemble]
enabled = false

[checks]
enabled = false

[latency]
batch_sizes = [1]
warmup = 1
min_repeats = 3
budget_s = 0.01
"""


def test_a_segfaulting_cell_leaves_the_run_complete_with_errors_and_every_other_cell_computed(tmp_path):
    (tmp_path / "segv_plugin.py").write_text(textwrap.dedent(PLUGIN))
    suite = tmp_path / "crash.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": ""}
    done = subprocess.run([sys.executable, "-m", "robustbench_cnn", "run", str(suite), "--out", str(out),
                           "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--no-report"],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]  # a run with failed cells exits 1, as always
    assert done.stderr.splitlines()[-1] == "robustbench-cnn: 2 cell(s) failed; see failed_cells in manifest.json"
    assert (tmp_path / "segv_calls").read_text() == "2"  # crashed twice, then skipped
    (run_dir,) = [p for p in (out / "crash").iterdir() if p.is_dir() and not p.is_symlink()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete_with_errors"
    failed = {f["cell"]: f for f in manifest["failed_cells"]}
    segv = next(f for c, f in failed.items() if "pgd_segv" in c)
    assert "killed its process 2 times (SIGSEGV" in segv["error"] and segv["signal"] == "SIGSEGV"
    assert all("pgd_segv" in c or "worst_case" in c for c in failed), failed  # only it and what needs it
    table = pd.read_csv(run_dir / "results.csv")
    assert {"clean_acc", "robust_acc", "latency_ms_p50"} <= set(table.metric)
    assert set(table.loc[table.metric == "robust_acc", "attack"]) == {"pgd"}
    assert "died of SIGSEGV in cnn attack" in done.stderr and "Traceback" not in done.stdout
