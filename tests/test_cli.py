"""The CLI: `plan` / `run --dry-run`, `list --verbose`, `--version`, and exits that stay one line."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

from robustbench_cnn import __version__
from robustbench_cnn.cli.main import main
from robustbench_cnn.config.paths import run_root
from robustbench_cnn.errors import InputError

SUITE = """
name = "plan-me"
seed = 1
device = "cpu"
[dataset]
name = "digits"
train_size = 200
eval_size = 40
[[models]]
name = "cnn"
arch = "simple_cnn"
params = { width = 4, stages = 2, convs_per_stage = 1 }
train = { epochs = 1, batch_size = 64, lr = 0.05 }
[[models]]
name = "cnn-pruned"
compress = { name = "prune", source = "cnn", ratio = 0.5 }
train = { epochs = 1, batch_size = 64, lr = 0.05 }
[[evaluations]]
attack = "pgd"
eps = [0.05, 0.1]
steps = 3
[checks]
enabled = false
[latency]
enabled = false
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(SUITE)
    return path


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")) if root.exists() else []


def test_plan_shows_models_cells_and_work_and_writes_nothing(tmp_path, suite, capsys):
    out = tmp_path / "out"
    before = _files(tmp_path)
    assert main(["plan", str(suite), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"suite 'plan-me' ({suite}): dataset digits, 200 train / 40 eval images, seed 1" in text
    assert f"cnn         train      {out / 'cache'}/simple_cnn-" in text
    assert "cnn-pruned  train" in text
    assert "cnn         7 (clean, attack x2, ensemble x2, worst_case x2)" in text
    assert "attack cells: attack=pgd,norm=linf,eps=0.05, attack=pgd,norm=linf,eps=0.1" in text
    # training: 200 images x 1 epoch, the pruned model x2 (fine-tune); attacks: 40 x 3 steps x 2 eps per model,
    # plus the default ensemble at both budgets: 40 x (1 + 3 targets + 1) members x 50 steps x 2 restarts x 2 eps
    assert "work (image-passes, approx.): train 600, attacks 8.05e+04, checks 0, certify 0; total 8.11e+04" in text
    assert _files(tmp_path) == before  # no weights, no cache folder, no run directory


def test_run_dry_run_prints_the_plan_and_runs_nothing(tmp_path, suite, capsys):
    out = tmp_path / "out"
    assert main(["plan", str(suite), "--out", str(out)]) == 0
    plan = capsys.readouterr().out
    assert main(["run", str(suite), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out == plan
    assert not out.exists()


def test_plan_reports_cache_hits_with_the_runners_keys(tmp_path, suite, capsys):
    from robustbench_cnn.config.load import load_suite
    from robustbench_cnn.engine.runner import RunOptions, run_suite

    out = tmp_path / "out"
    text = SUITE.replace('[[evaluations]]\nattack = "pgd"\neps = [0.05, 0.1]\nsteps = 3\n', "")
    text = text.replace("epochs = 1", "epochs = 0")  # the cache keys, not the weights, are under test (~2 s)
    suite.write_text(text)
    result = run_suite(load_suite(suite), RunOptions(out_root=out, cache_dir=out / "cache", progress=False))
    before = _files(out)
    assert main(["plan", str(suite), "--out", str(out)]) == 0
    plan = capsys.readouterr().out
    for name, entry in result.manifest["models"].items():
        assert f"{name:<10}  cache hit  {entry['weights']}" in plan
    assert _files(out) == before


def test_run_refuses_work_beyond_max_work(tmp_path, suite, capsys):
    out = tmp_path / "out"
    assert main(["plan", str(suite), "--out", str(out), "--max-work", "100"]) == 0
    assert "WARNING: 8.11e+04 image-passes exceeds --max-work 100; `run` refuses it" in capsys.readouterr().out
    assert main(["run", str(suite), "--out", str(out), "--max-work", "100"]) == 2
    err = capsys.readouterr().err
    assert err == (f"robustbench-cnn: error: {suite}: about 8.11e+04 image-passes of work exceeds --max-work 100; "
                   "shrink the suite (see `robustbench-cnn plan`) or raise --max-work\n")  # fmt: skip
    assert not out.exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"robustbench-cnn {__version__}\n"


def test_list_verbose_shows_parameters_and_defaults(capsys):
    assert main(["list", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "eps=0.03137254901960784, norm='linf', steps=7, step_size=None, bn_train_during_attack=False" in out
    assert "depth=20, width=1.0, preact=False" in out
    assert "source=required, ratio=0.5" in out
    assert main(["list"]) == 0
    assert "steps=7" not in capsys.readouterr().out


def test_results_never_leave_out(tmp_path, suite, capsys):
    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    outside.mkdir()
    (out / "plan-me").symlink_to(outside)
    assert main(["run", str(suite), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the results root" in err
    assert _files(outside) == []
    with pytest.raises(InputError, match="not a valid name"):
        run_root(out, "../escape")
    assert run_root(out, "ok") == out.resolve() / "ok"


def test_a_too_long_results_path_is_one_line(tmp_path, suite, capsys):
    out = tmp_path / ("x" * 300)
    assert main(["run", str(suite), "--out", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "File name too long" in err and "xxxx" in err


@pytest.mark.parametrize(
    ("exc", "code", "expected"),
    [
        (OSError(errno.EROFS, "Read-only file system", "/r/o"), 2,
         "robustbench-cnn: error: /r/o: Read-only file system; check its permissions and free space, or choose "
         "another --out"),
        (OSError(errno.ENOSPC, "No space left on device", "/full"), 2,
         "robustbench-cnn: error: /full: No space left on device; check its permissions and free space, or choose "
         "another --out"),
        (KeyboardInterrupt(), 130,
         "robustbench-cnn: interrupted; finished results were kept; continue with: "
         "robustbench-cnn run {suite} --resume"),
        (FloatingPointError("train cnn: training loss is nan; lower train.lr"), 1,
         "robustbench-cnn: error: train cnn: training loss is nan; lower train.lr"),
    ],
)  # fmt: skip
def test_run_failures_are_one_line(tmp_path, suite, capsys, monkeypatch, exc, code, expected):
    import robustbench_cnn.cli.runs as runs  # the run command's module

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(runs, "run_suite", fail)
    assert main(["run", str(suite), "--out", str(tmp_path / "out")]) == code
    assert capsys.readouterr().err == expected.format(suite=suite) + "\n"


def test_help_of_every_command_imports_no_torch():
    import subprocess

    code = (
        "import sys\nfrom robustbench_cnn.cli.main import main\n"
        "for argv in (['--help'], ['plan', '--help'], ['run', '--help'], ['list', '--help']):\n"
        "    try: main(argv)\n    except SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'pandas', 'pydantic') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith("[]")


@pytest.mark.slow  # a real run interrupted by SIGINT
def test_sigint_during_run_exits_130_with_one_line_and_can_resume(tmp_path, suite):
    import signal
    import subprocess
    import time

    suite.write_text(SUITE.replace("epochs = 1", "epochs = 200"))  # long enough to be interrupted in training
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "robustbench_cnn", "run", str(suite), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    # (SIG_DFL: a test run started in the background hands its children SIGINT ignored)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "plan-me").glob("*T*Z-*/manifest.json")):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (f"robustbench-cnn: interrupted; finished results were kept; continue with: "
                                    f"robustbench-cnn run {suite} --resume")  # fmt: skip
    manifest = next((out / "plan-me").glob("*T*Z-*/manifest.json")).read_text()
    assert '"status": "interrupted"' in manifest
