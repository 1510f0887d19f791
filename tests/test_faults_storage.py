"""Storage faults: a read-only ``--out`` and a full disk end in one line and exit 2, losing nothing.

Read-only: the results tree is made immutable (``chattr +i`` as root, where permissions do not
bind; ``chmod a-w`` otherwise). Full disk: at a named point the child sets its own ``RLIMIT_FSIZE``
to 0 with ``SIGXFSZ`` ignored (``tests/plugins/faultpoint.py``), so every later write fails with
``EFBIG`` as a full disk fails with ``ENOSPC``; unprivileged and deterministic. Afterwards the run
resumes (space freed) to the same table as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from test_faults_kill import cache_entries, cli, references, run_args, runs, table, write_suite

from robustbench_cnn.cli.main import main


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return references(tmp_path_factory)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@contextmanager
def read_only(root: Path) -> Iterator[None]:
    """``root`` and everything in it cannot be written, created in or deleted, for the block."""
    if os.geteuid() == 0:  # root ignores permission bits; the immutable attribute binds it
        if shutil.which("chattr") is None or subprocess.run(["chattr", "-R", "+i", str(root)]).returncode:
            pytest.skip("running as root on a filesystem without chattr +i: cannot make --out read-only")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-R", "-i", str(root)], check=True)
        return
    paths = [root, *root.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in reversed(paths):
        p.chmod(modes[p] & ~0o222)
    try:
        yield
    finally:
        for p in paths:
            p.chmod(modes[p])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustbench-cnn: error: "), err[-3000:]
    assert "Traceback" not in err
    return lines[0]


def test_a_read_only_out_is_one_line_exit_2_and_touches_nothing(tmp_path, capsys):
    suite = write_suite(tmp_path / "suite")
    out = tmp_path / "out"
    earlier = out / "faults" / "20260101T000000Z-abcdef"  # an earlier run that must survive as it is
    earlier.mkdir(parents=True)
    (earlier / "manifest.json").write_text(json.dumps({"run_id": earlier.name, "suite": "faults", "models": {}}))
    (earlier / "results.csv").write_text("run_id,model\n")
    before = snapshot(out)
    with read_only(out):
        assert main(run_args(suite, out, out / "cache")) == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(out) in line and "check its permissions and free space, or choose another --out" in line
        assert main([*run_args(suite, out, out / "cache"), "--resume", str(earlier)]) == 2
        one_error_line(capsys.readouterr().err)
    assert snapshot(out) == before


@pytest.mark.parametrize(
    ("fault", "cells_kept"),
    [
        ("full@open:*/.manifest.json.*.tmp", False),
        ("full@open:*/.results.csv.*.tmp#3", True),
    ],
    ids=["disk-full-at-the-first-manifest", "disk-full-after-two-cells"],
)
def test_a_full_disk_is_one_line_exit_2_and_the_run_resumes_to_the_same_table(tmp_path, reference, fault, cells_kept):
    """The disk fills at a named point (``full`` in faultpoint.py); the run stops with one line and exit 2,
    keeps every cell it stored, and resumes (space freed) to the table of an uninterrupted run."""
    ref_dir, _ = reference("")
    suite, out, cache = write_suite(tmp_path), tmp_path / "out", tmp_path / "cache"
    full = cli(run_args(suite, out, cache), fault)
    assert full.returncode == 2, full.stderr[-3000:]
    line = one_error_line("\n".join(x for x in full.stderr.splitlines() if " INFO " not in x and " WARNING " not in x))
    assert "File too large; check its permissions and free space, or choose another --out" in line
    assert "Logging error" not in full.stderr
    (run_dir,) = runs(out)
    kept = snapshot(run_dir / "cells") if (run_dir / "cells").is_dir() else {}
    assert bool(kept) == cells_kept
    resumed = cli(run_args(suite, out, cache, "--resume"))  # space freed
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["cells"]["reused"] == len(
        [k for k in kept if k.endswith(".csv")]
    )
    assert all((run_dir / "cells" / name).read_bytes() == data for name, data in kept.items())  # nothing lost
    pd.testing.assert_frame_equal(table(run_dir), table(ref_dir))
    assert set(cache_entries(cache).values()) == {"ok"}
