"""Kill a run at named points (SIGKILL or SIGINT), ``--resume`` it, get the table of an uninterrupted run.

The fault is injected by ``tests/plugins/faultpoint.py`` (an audit hook on file opens and torch's
optimizer-step hook, installed only in the test's child process), so each kill lands at the same
moment every time: during training, while the model cache writes its weights or its ``meta.json``,
while an export (ONNX, int8 ONNX, TFLite) is being written, and between cells. A torn file is left
where the kill cut a write short. The default run takes a fast slice; ``ROBUSTBENCH_FAULTS=1``
(``nox -s faults``) runs every point.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.train.cache import META, WEIGHTS, sha256_file

ROOT = Path(__file__).resolve().parents[1]
FAULTPOINT = ROOT / "tests" / "plugins" / "faultpoint.py"
FULL = os.environ.get("ROBUSTBENCH_FAULTS") == "1"
nightly = pytest.mark.skipif(not FULL, reason="nightly fault set: ROBUSTBENCH_FAULTS=1 (nox -s faults)")

SUITE = """
name = "faults"
seed = 1
device = "cpu"
[dataset]
name = "digits"
train_size = 200
eval_size = 60
[[models]]
name = "a"
arch = "simple_cnn"
params = {{ width = 4, stages = 2, convs_per_stage = 1 }}
train = {{ epochs = 2, batch_size = 64, lr = 0.05 }}
[[models]]
name = "b"
arch = "simple_cnn"
params = {{ width = 6, stages = 2, convs_per_stage = 1 }}
train = {{ epochs = 1, batch_size = 64, lr = 0.05 }}
[[evaluations]]
attack = "pgd"
eps = [0.0, 0.05, 0.1]
steps = 3
[[evaluations]]
attack = "fgsm"
eps = [0.1]
[ensemble]
members = ["cw_pgd"]
steps = 3
restarts = 1
[checks]
enabled = false
[latency]
enabled = false
[performance]
reproducible_training = false  # the faults hook this process's training and cache writes, not a pinned child's
{exports}
"""
EXPORTS = {
    "": "",
    "onnx": '[[exports]]\nformat = "onnx"\nprecision = "int8"',
    "tflite": '[[exports]]\nformat = "tflite"\nprecision = "fp32"',
}
STABLE = ["model", "format", "runtime", "compression", "metric", "attack", "norm", "eps", "value", "n"]
NOISY = ("latency_", "throughput")  # timings differ run to run; everything else must not


def write_suite(folder: Path, exports: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "faults.toml"
    path.write_text(SUITE.format(exports=EXPORTS[exports]))
    return path


def cli(args: list[str], fault: str = "", env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``robustbench-cnn ARGS`` in a child process, with ``fault`` injected (see faultpoint.py)."""
    child = {**os.environ, "PYTHONPATH": str(ROOT), "ROBUSTBENCH_FAULT": fault, **(env or {})}
    return subprocess.run([sys.executable, str(FAULTPOINT), *args], capture_output=True, text=True, env=child,
                          timeout=300, **kwargs)  # fmt: skip


def run_args(suite: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["run", str(suite), "--out", str(out), "--cache-dir", str(cache), "--no-progress", "--no-report", *extra]


def table(run_dir: Path) -> pd.DataFrame:
    df = read_csv(run_dir / "results.csv")
    df = df[~df.metric.str.startswith(NOISY)]
    return df[STABLE].sort_values(STABLE[:8]).reset_index(drop=True)


def runs(out: Path) -> list[Path]:
    suite_dir = out / "faults"
    return sorted(p for p in suite_dir.glob("*T*Z-*") if p.is_dir()) if suite_dir.is_dir() else []


def cache_entries(cache: Path) -> dict[str, str]:
    """Entry folder -> "ok" (meta.json names the weights' true sha256) or what is wrong with it."""
    status = {}
    for folder in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            meta = json.loads((folder / META).read_text())
            good = meta["weights_sha256"] == sha256_file(folder / WEIGHTS) and meta["key"] in folder.name
            status[folder.name] = "ok" if good else "sha256 mismatch"
        except (OSError, ValueError, KeyError) as exc:
            status[folder.name] = type(exc).__name__
    return status


def references(tmp_path_factory):
    """Uninterrupted runs (one per export kind, made on first use): ``get(exports)`` -> (run dir, its cache)."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(exports: str) -> tuple[Path, Path]:
        if exports not in made:
            root = tmp_path_factory.mktemp(f"reference-{exports or 'plain'}")
            suite, out = write_suite(root, exports), root / "out"
            done = cli(run_args(suite, out, root / "cache"))
            assert done.returncode == 0, done.stderr[-3000:]
            made[exports] = (runs(out)[0], root / "cache")
        return made[exports]

    return get


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return references(tmp_path_factory)


def interrupt_and_resume(tmp_path: Path, reference, fault: str, exports: str = "", warm: bool = False):
    """Run with ``fault``, check how it died, resume; returns (run dir, manifest, reference run dir)."""
    ref_dir, ref_cache = reference(exports)
    suite, out, cache = write_suite(tmp_path, exports), tmp_path / "out", tmp_path / "cache"
    if warm:  # models already cached (an earlier run of the night trained them)
        shutil.copytree(ref_cache, cache, ignore=shutil.ignore_patterns(".locks"))
    first = cli(run_args(suite, out, cache), fault)
    if fault.startswith("kill"):
        assert first.returncode == -signal.SIGKILL, f"the fault point was never reached:\n{first.stderr[-3000:]}"
    else:
        assert first.returncode == 130, first.stderr[-3000:]
        assert "Traceback" not in first.stderr
        assert first.stderr.splitlines()[-1] == (f"robustbench-cnn: interrupted; finished results were kept; "
                                                 f"continue with: robustbench-cnn run {suite} --resume")  # fmt: skip
    (run_dir,) = runs(out)
    if fault.startswith("int"):
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    resumed = cli(run_args(suite, out, cache, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert runs(out) == [run_dir], "--resume must continue the interrupted run, not start another"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"] and not manifest.get("failed_cells")
    reference_cells = json.loads((ref_dir / "manifest.json").read_text())["cells"]["computed"]
    assert manifest["cells"]["computed"] + manifest["cells"]["reused"] == reference_cells
    pd.testing.assert_frame_equal(table(run_dir), table(ref_dir))
    assert set(cache_entries(cache).values()) == {"ok"} and len(cache_entries(cache)) == 2, cache_entries(cache)
    assert not list(cache.rglob("*.tmp")), "a torn temporary file of a killed cache write was left behind"
    return run_dir, manifest, ref_dir


HIT, MISS = ("hit", "hit"), ("miss", "miss")  # the resumed run's cache use of models a and b
FAST = [  # about 15 s each on 2 busy cores (mostly the child processes' start)
    pytest.param("kill@open:*/cache/*/.meta.json.*.tmp", "", MISS, id="kill-between-weights-and-meta"),
    pytest.param("int@open:*/.results.csv.*.tmp#2", "", HIT, id="sigint-between-cells"),
]
NIGHTLY = [
    ("kill@step:2", "", MISS, "kill-during-training"),
    ("kill@open:*/.results.csv.*.tmp#3", "", HIT, "kill-between-cells"),
    ("kill@open:*/cache/*/.model.safetensors.*.tmp", "", MISS, "kill-writing-weights"),
    ("kill@open:*/cache/*/.model.safetensors.*.tmp#2", "", ("hit", "miss"), "kill-writing-second-model"),
    ("int@step:3", "", MISS, "sigint-during-training"),
    ("kill@open:*/cells/.*.npy.*.tmp#2", "", HIT, "kill-writing-cell-arrays"),
    ("kill@open:*/.manifest.json.*.tmp#4", "", HIT, "kill-writing-manifest"),
    ("kill@open:*/faults/*/tmp*/a.onnx", "onnx", HIT, "kill-writing-onnx"),
    ("kill@open:*/exports/a.int8.pre.onnx", "onnx", HIT, "kill-preparing-int8-onnx"),
    ("kill@open:*/exports/a.int8.onnx", "onnx", HIT, "kill-writing-int8-onnx"),
    ("kill@rename:*/faults/*/tmp*/b.onnx", "onnx", HIT, "kill-moving-onnx-in-place"),
    ("int@open:*/faults/*/tmp*/b.onnx", "onnx", HIT, "sigint-writing-onnx"),
    ("kill@rename:*/faults/*/tmp*/a.tflite", "tflite", HIT, "kill-moving-torn-tflite-in-place"),
]


def check(tmp_path, reference, fault: str, exports: str, cache_use: tuple[str, str]) -> None:
    _, manifest, _ = interrupt_and_resume(tmp_path, reference, fault, exports, warm=cache_use == HIT)
    assert (manifest["models"]["a"]["cache"], manifest["models"]["b"]["cache"]) == cache_use


@pytest.mark.parametrize(("fault", "exports", "cache_use"), FAST)
def test_interrupted_then_resumed_equals_an_uninterrupted_run(tmp_path, reference, fault, exports, cache_use):
    check(tmp_path, reference, fault, exports, cache_use)


@nightly
@pytest.mark.slow
@pytest.mark.parametrize(("fault", "exports", "cache_use"), [pytest.param(*p[:3], id=p[3]) for p in NIGHTLY])
def test_every_fault_point_then_resume_equals_an_uninterrupted_run(tmp_path, reference, fault, exports, cache_use):
    check(tmp_path, reference, fault, exports, cache_use)


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files and folders of killed writers still in a run directory."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.name.endswith(".tmp") or (p.is_dir() and p.name.startswith("tmp")))  # fmt: skip


@nightly
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill@open:*/.results.csv.*.tmp#3", "kill@open:*/faults/*/tmp*/a.onnx"])
def test_a_resumed_run_leaves_no_temporary_files_of_the_killed_one(tmp_path, reference, fault):
    run_dir, _, _ = interrupt_and_resume(tmp_path, reference, fault, "onnx" if "onnx" in fault else "", warm=True)
    assert leftovers(run_dir) == []
