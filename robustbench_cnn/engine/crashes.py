"""Native crashes of a run's process, and the supervisor that resumes the run past them.

A Python exception in a cell is recorded and the run goes on (``scheduler.Scheduler``). A native crash
(SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE: heap corruption in a math library, a bad pointer in an
extension) kills the interpreter, so it is handled one level up: ``robustbench-cnn run`` runs the
suite in a child process (:func:`supervised_run`). Before computing a cell, or preparing a model, the
runner names it in the run's ``inflight.json``; when the child dies of a crash signal, the supervisor
adds the signal to that entry of ``crashes.json`` and resumes the run (cells already stored are
reused). A cell that killed the process :data:`MAX_CRASHES` times is recorded in ``failed_cells``
with its signal and skipped with its dependants, so the run ends ``complete_with_errors`` with every
other cell computed. A model whose preparation (training, fine-tuning) crashed that often stops the
run with one line naming it: the cells of every later model may depend on it.

Standard library only: the supervisor starts before torch is imported.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from robustbench_cnn.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE})
MAX_CRASHES = 2  # a cell that killed its process this many times is skipped, not retried
MAX_RESTARTS = 16  # a run resumed this many times after crashes is given up (the crash is passed on)
CHILD_ENV = "ROBUSTBENCH_CNN_SUPERVISED_CHILD"  # set in the child: it runs the suite itself
POINTER_ENV = "ROBUSTBENCH_CNN_RUN_DIR_FILE"  # the child writes its run directory's path here
RESUME_ENV = "ROBUSTBENCH_CNN_RESUME"  # the supervisor resumes this run directory after a crash
INFLIGHT, CRASHES = "inflight.json", "crashes.json"


def _write(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def tell_supervisor(run_dir: Path) -> None:
    """In a supervised child: tell the supervisor which run directory to resume after a crash."""
    pointer = os.environ.get(POINTER_ENV)
    if pointer and os.environ.get(CHILD_ENV) == "1":
        atomic_write_bytes(Path(pointer), str(run_dir).encode())


@contextmanager
def in_flight(run_dir: Path | None, key: str, model: str, label: str) -> Iterator[None]:
    """Within the block, a supervised child names its work (a cell id, or ``prepare:<model>``) in the
    run's in-flight marker; the marker goes when the block ends, also by a Python exception (recorded
    elsewhere). Only a native crash leaves it for the supervisor."""
    marker = run_dir / INFLIGHT if run_dir is not None and os.environ.get(CHILD_ENV) == "1" else None
    if marker is not None:
        _write(marker, {"key": key, "model": model, "label": label})
    try:
        yield
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def signals(run_dir: Path | None, key: str) -> list[str]:
    """The signals ``key``'s work killed the run's process with, oldest first."""
    entry = _read(run_dir / CRASHES).get(key) if run_dir is not None else None
    found = entry.get("signals") if isinstance(entry, dict) else None
    return [str(s) for s in found] if isinstance(found, list) else []


def killed_message(found: list[str]) -> str:
    """The ``failed_cells`` message of a cell skipped after native crashes."""
    return (f"killed its process {len(found)} times ({', '.join(dict.fromkeys(found))}: a native crash); "
            "skipped, with the cells that need it")  # fmt: skip


def note_crash(run_dir: Path, signum: int) -> str:
    """Add ``signum`` to the crash record of the work in flight; returns that work's label ("" if none)."""
    inflight = _read(run_dir / INFLIGHT)
    key = inflight.get("key")
    if not isinstance(key, str):
        return ""
    record = _read(run_dir / CRASHES)
    name = signal.Signals(signum).name
    record[key] = {"model": inflight.get("model"), "label": inflight.get("label"),
                   "signals": [*signals(run_dir, key), name]}  # fmt: skip
    _write(run_dir / CRASHES, record)
    (run_dir / INFLIGHT).unlink(missing_ok=True)
    return f"{inflight.get('model')} {inflight.get('label')}"


def _die_with_parent() -> None:
    """In the child, before it runs: on Linux, be killed (SIGKILL) when the supervisor dies, as a
    ``kill -9`` of the supervisor's process group would have killed it before it had its own session."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _die_like(returncode: int) -> int:
    """Return ``returncode``; a child killed by a signal is passed on by dying of the same signal."""
    if returncode < 0:
        signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
    return returncode


def supervised_run(argv: list[str]) -> int:
    """Run ``robustbench-cnn <argv>`` (a ``run``) in a child process; after a native crash, note the
    work in flight and resume the run, up to :data:`MAX_RESTARTS` times. The child's exit code, or its
    fatal signal, is this process's. The child runs in its own session; Ctrl-C (SIGINT) and SIGTERM
    sent to this process are passed on to it (it stops and says how to resume)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="robustbench-cnn-") as tmp:
        pointer = Path(tmp) / "run_dir"
        env = {**os.environ, CHILD_ENV: "1", POINTER_ENV: str(pointer)}
        env.pop(RESUME_ENV, None)
        for _ in range(MAX_RESTARTS + 1):
            child = subprocess.Popen([sys.executable, "-m", "robustbench_cnn", *argv], env=env,
                                     start_new_session=True,  # signals reach it through this process only
                                     preexec_fn=_die_with_parent)  # fmt: skip
            previous = signal.signal(signal.SIGTERM, lambda *_, c=child: c.send_signal(signal.SIGTERM))
            interrupt = signal.signal(signal.SIGINT, lambda *_, c=child: c.send_signal(signal.SIGINT))
            try:
                code = child.wait()
            finally:
                signal.signal(signal.SIGTERM, previous)
                signal.signal(signal.SIGINT, interrupt)
            if code >= 0 or -code not in CRASH_SIGNALS or not pointer.is_file():
                return _die_like(code)
            run_dir = Path(pointer.read_text().strip())
            work = note_crash(run_dir, -code)
            if not work:  # outside any cell or model preparation: nothing to skip, so no point resuming
                return _die_like(code)
            log.error("the run's process died of %s in %s; resuming %s", signal.Signals(-code).name, work, run_dir)
            env[RESUME_ENV] = str(run_dir)
    log.error("the run crashed %d times; giving up", MAX_RESTARTS + 1)
    return _die_like(code)
