"""Test-only fault injection: run the CLI in this process and fail it at a named point, deterministically.

``python tests/plugins/faultpoint.py run SUITE --out OUT ...`` is ``robustbench-cnn run ...`` with
hooks that only the tests install (the library has none). ``ROBUSTBENCH_FAULT=ACTION@POINT[#N]``:

- ``ACTION``: ``kill`` (SIGKILL: no cleanup at all), ``int`` (SIGINT, as Ctrl-C) or ``full`` (the
  disk fills: from then on every write that grows a file fails with ``EFBIG``, through
  ``RLIMIT_FSIZE`` = 0 with ``SIGXFSZ`` ignored, as a full disk fails with ``ENOSPC``).
- ``POINT``: ``open:GLOB``, the ``N``-th (default first) time a file whose full path matches the
  ``fnmatch`` pattern ``GLOB`` is opened for writing; for ``kill`` the file is first left torn (a
  few garbage bytes, as a write cut short leaves it). ``rename:GLOB``: the ``N``-th time a file
  whose path matches is about to be renamed (moved in place), for files that native code writes
  (the TFLite converter) where Python sees no open; for ``kill`` the file is first cut to half its
  length (a torn prefix). ``step:K``: after the ``K``-th optimizer step of the process (training).

``ROBUSTBENCH_SYNC=DIR:ME:OTHER`` makes two concurrent runs overlap for certain: opening a model
cache lock creates ``DIR/ME``; the first optimizer step waits (up to 120 s) until ``DIR/OTHER``
exists, so one run trains while the other is already waiting on the same key.

The hooks are an audit hook (``sys.addaudithook``, the ``open`` event) and torch's global optimizer
step hook; no library function is replaced.
"""

from __future__ import annotations

import fnmatch
import os
import resource
import signal
import sys
import time
from pathlib import Path

TORN = b"\x00torn write\xff"
_state = {"inside": False, "opens": 0, "steps": 0, "waited": False}


def _writes(flags: object) -> bool:
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))


def _fire(action: str, torn: str | None = None) -> None:
    if action == "full":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        return
    if action == "kill":
        if torn is not None:
            fd = os.open(torn, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, TORN)
            os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt in the main thread


def install(fault: str, sync: str) -> None:
    """Install the hooks described in the module docstring (empty strings: none)."""
    action, _, point = fault.partition("@")
    point, _, nth = point.partition("#")
    kind, _, arg = point.partition(":")
    wanted = int(nth or 1)
    sync_dir, me, other = (sync.split(":") + ["", "", ""])[:3] if sync else ("", "", "")

    def audit(event: str, args: tuple) -> None:
        if event == "os.rename" and kind == "rename" and not _state["inside"] and fnmatch.fnmatch(str(args[0]), arg):
            _state["opens"] += 1
            if _state["opens"] == wanted:
                _state["inside"] = True
                if action == "kill":
                    os.truncate(args[0], os.path.getsize(args[0]) // 2)
                _fire(action)
            return
        if event != "open" or _state["inside"] or len(args) < 3 or not isinstance(args[0], str | Path):
            return
        if not _writes(args[2]):
            return
        path = os.fspath(args[0])
        _state["inside"] = True
        try:
            if sync_dir and fnmatch.fnmatch(path, "*/.locks/*.lock"):
                Path(sync_dir, me).touch()
            if kind == "open" and fnmatch.fnmatch(path, arg):
                _state["opens"] += 1
                if _state["opens"] == wanted:
                    _fire(action, path)
        finally:
            _state["inside"] = False

    if kind in ("open", "rename") or sync_dir:
        sys.addaudithook(audit)
    if kind == "step" or sync_dir:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def step(*_: object) -> None:
            _state["steps"] += 1
            if sync_dir and not _state["waited"]:
                _state["waited"] = True
                deadline = time.monotonic() + 120
                while not Path(sync_dir, other).exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            if kind == "step" and _state["steps"] == int(arg):
                _fire(action)

        register_optimizer_step_post_hook(step)


if __name__ == "__main__":
    # as in a terminal: a test run started in the background (``pytest &`` in a script) hands its
    # children SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install(os.environ.get("ROBUSTBENCH_FAULT", ""), os.environ.get("ROBUSTBENCH_SYNC", ""))
    from robustbench_cnn.cli.main import main

    raise SystemExit(main(sys.argv[1:]))
