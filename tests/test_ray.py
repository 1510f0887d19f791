"""``--executor ray`` on a local Ray cluster bound to 127.0.0.1 (``nox -s tests_ray``; skipped without Ray).

(1) the resume test's suite gives the in-process table; (2) sharded attack and certify cells give the
same per-image arrays with 1 worker, 2 workers and the in-process plan; (3) a worker SIGKILLed in a
shard: that shard runs twice, every other once, the run completes; (4) the driver SIGKILLed, then
``--resume``: only unfinished cells are computed; (5) a raising cell is not retried and exits 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.engine.runner import RunOptions, run_suite
from robustbench_cnn.engine.store import CellStore

if not os.environ.get("ROBUSTBENCH_RAY"):
    pytest.skip("Ray cluster tests run in `nox -s tests_ray` (ROBUSTBENCH_RAY=1)", allow_module_level=True)
ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

SUITE = """
name = "shards"
seed = 3
device = "cpu"
plugins = ["faults"]
[dataset]
name = "digits"
train_size = 400
eval_size = 90
[[models]]
name = "plain"
arch = "simple_cnn"
params = { width = 8, stages = 2 }
train = { epochs = 4 }
[[models]]
name = "noisy"
arch = "simple_cnn"
params = { width = 8, stages = 2 }
train = { epochs = 4 }
defense = { name = "gaussian", sigma = 0.25 }
[[evaluations]]
attack = "ATTACK"
eps = [0.1]
steps = 3
[ensemble]
enabled = false
[checks]
enabled = false
[latency]
enabled = false
[certify]
n0 = 20
n = 100
eval_size = 30
[performance]
attack_shard_size = 30
certify_shard_size = 10
"""

PLUGIN = '''
import os, signal
from pathlib import Path
from robustbench_cnn.attacks import register_attack
from robustbench_cnn.attacks.builtin import pgd

MARK = Path(__file__).with_name("killed")

@register_attack("pgd_kill", norms=("linf",))
def pgd_kill(model, eps, norm="linf", steps=10, step_size=None, num_classes=10):
    """PGD whose first call anywhere SIGKILLs its own process (a worker dying mid-shard)."""
    if not MARK.exists():
        MARK.write_text("killed once")
        os.kill(os.getpid(), signal.SIGKILL)
    return pgd(model, eps, norm, steps, step_size, num_classes)

@register_attack("pgd_raise", norms=("linf",))
def pgd_raise(model, eps, norm="linf", steps=10, step_size=None, num_classes=10):
    raise ValueError("this attack always raises")
'''

NOT_COMPARED = {"run_id"}


def write_suite(folder: Path, attack: str = "pgd", text: str = SUITE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "faults.py").write_text(PLUGIN)
    path = folder / "suite.toml"
    path.write_text(text.replace("ATTACK", attack))
    return path


def run(path: Path, out: Path, cache: Path, executor: str, **kwargs):
    opts = RunOptions(out_root=out, cache_dir=cache, progress=False, executor=executor, **kwargs)
    return run_suite(load_suite(path), opts)


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=sorted(NOT_COMPARED)).reset_index(drop=True)


def cell_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    """Every cell's per-image arrays but the timings (``seconds`` per certified image)."""
    paths = sorted((run_dir / "cells").glob("*.npy"))
    return {p.name: np.load(p, allow_pickle=False) for p in paths if not p.name.endswith(".seconds.npy")}


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU local cluster on 127.0.0.1, shared by the tests that do not restart it."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING",
             log_to_driver=False)  # fmt: skip
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process run of the sharded suite (sequential plan): table and per-image arrays."""
    root = tmp_path_factory.mktemp("reference")
    result = run(write_suite(root / "suite"), root / "out", root / "cache", "local")
    assert result.manifest["status"] == "complete"
    return result, root / "cache"


def test_sharded_cells_are_identical_with_1_and_2_workers_and_in_process(reference, tmp_path):
    ref, cache = reference
    ray.shutdown()
    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING",
                 log_to_driver=False)  # fmt: skip
        try:
            result = run(write_suite(tmp_path / f"s{cpus}"), tmp_path / f"o{cpus}", cache, "ray")
        finally:
            ray.shutdown()
        pd.testing.assert_frame_equal(comparable(result.table), comparable(ref.table))
        mine, theirs = cell_arrays(result.run_dir), cell_arrays(ref.run_dir)
        assert mine.keys() == theirs.keys() and any(".adv." not in k for k in mine)
        for name in mine:
            np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)
        sharded = [p for p in (result.run_dir / "cells").glob("*.shards") if p.is_dir()]
        assert len(sharded) == 3  # two attack cells (3 shards each) and one certify cell (3 shards)


def test_the_resume_suite_gives_the_in_process_table(cluster, tmp_path):
    from test_resume import SUITE as RESUME_SUITE

    path = tmp_path / "resume.toml"
    path.write_text(RESUME_SUITE)
    local = run(path, tmp_path / "local", tmp_path / "cache", "local")
    distributed = run(path, tmp_path / "ray", tmp_path / "cache", "ray")
    latency = distributed.table.metric.str.startswith("latency") | (distributed.table.metric == "throughput")
    keep = ~latency  # timings differ between any two runs; everything else is identical
    pd.testing.assert_frame_equal(comparable(distributed.table[keep]), comparable(local.table[keep.values]))
    assert distributed.manifest["executor"] == "ray" and distributed.manifest["status"] == "complete"


def test_a_worker_killed_in_a_shard_reruns_that_shard_only(cluster, reference, tmp_path):
    ref, cache = reference
    result = run(write_suite(tmp_path / "s", "pgd_kill"), tmp_path / "o", cache, "ray")
    assert result.manifest["status"] == "complete"
    assert (tmp_path / "s" / "killed").is_file()
    index = CellStore(result.run_dir).read_index()["cells"]
    counts = [CellStore(result.run_dir).attempts(e["id"]) for e in index if e["kind"] == "attack"]
    runs = sorted(n for c in counts for n in c.values())
    assert runs == [1] * 5 + [2], counts  # 2 models x 3 shards: the killed one ran twice
    assert set(result.table[result.table.metric == "robust_acc"].model) == {"plain", "noisy"}


def test_a_raising_cell_is_not_retried_and_the_run_exits_1(cluster, reference, tmp_path, capsys):
    _, cache = reference
    path = write_suite(tmp_path / "s", "pgd_raise")
    code = main(["run", str(path), "--out", str(tmp_path / "o"), "--cache-dir", str(cache), "--no-progress",
                 "--no-report", "--executor", "ray", "--ray-address", cluster])  # fmt: skip
    assert code == 1 and "cell(s) failed" in capsys.readouterr().err
    run_dir = next((tmp_path / "o" / "shards").glob("*T*Z-*"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    failed = {f["cell"]: f["error"] for f in manifest["failed_cells"]}
    assert any("this attack always raises" in e for e in failed.values())
    index = CellStore(run_dir).read_index()["cells"]
    attempts = [CellStore(run_dir).attempts(e["id"]) for e in index if e["kind"] == "attack"]
    assert all(n == 1 for c in attempts for n in c.values()) and any(attempts)
    assert "certified_acc" in set(read_csv(run_dir / "results.csv").metric)  # the other cells ran


def test_a_killed_driver_resumes_computing_only_unfinished_cells(cluster, reference, tmp_path):
    ref, cache = reference
    path = write_suite(tmp_path / "s")
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "robustbench_cnn", "run", str(path), "--out", str(out), "--cache-dir", str(cache),
           "--no-progress", "--no-report", "--executor", "ray", "--ray-address", cluster]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((out / "shards").glob("*T*Z-*")) if (out / "shards").is_dir() else []
        if runs and CellStore(run_dir := runs[0]).count() >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the suite larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # tasks of the dead driver are cancelled by Ray; let the last writes land
    assert run_dir is not None
    finished = CellStore(run_dir).count()
    total = len(CellStore(run_dir).read_index()["cells"])
    resumed = run(path, out, cache, "ray", resume=run_dir, ray_address=cluster)
    assert resumed.manifest["cells"] == {"computed": total - finished, "reused": finished, "failed": 0}
    pd.testing.assert_frame_equal(comparable(resumed.table), comparable(ref.table))
