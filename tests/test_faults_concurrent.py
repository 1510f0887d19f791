"""Two runs started at once on one ``--out``: both finish, in distinct run directories, with identical
tables and one intact model cache in which each key was trained once.

The overlap is forced, not hoped for (``ROBUSTBENCH_SYNC`` in ``tests/plugins/faultpoint.py``):
whichever run trains first waits at its first optimizer step until the other has reached the model
cache's lock, so without the per-key lock both would train and write the same entry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
from test_faults_kill import FAULTPOINT, ROOT, cache_entries, run_args, runs, table, write_suite


def test_two_runs_at_once_on_one_out_train_each_key_once(tmp_path):
    suite, out = write_suite(tmp_path / "suite"), tmp_path / "out"
    sync = tmp_path / "sync"
    sync.mkdir()
    procs = []
    for me, other in (("one", "two"), ("two", "one")):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ROBUSTBENCH_SYNC": f"{sync}:{me}:{other}"}
        cmd = [sys.executable, str(FAULTPOINT), *run_args(suite, out, out / "cache")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
    assert sorted(p.name for p in sync.iterdir()) == ["one", "two"]  # both reached the cache lock
    first, second = runs(out)
    assert first != second
    pd.testing.assert_frame_equal(table(first), table(second))
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (first, second)]
    assert all(m["status"] == "complete" for m in manifests)
    for model in ("a", "b"):
        uses = sorted(m["models"][model]["cache"] for m in manifests)
        assert uses == ["hit", "miss"], f"model {model}: {uses} (each key must be trained by exactly one run)"
        assert manifests[0]["models"][model]["key"] == manifests[1]["models"][model]["key"]
    assert cache_entries(out / "cache") == {
        p.name: "ok" for p in (out / "cache").iterdir() if p.is_dir() and not p.name.startswith(".")
    }
    assert len(cache_entries(out / "cache")) == 2
