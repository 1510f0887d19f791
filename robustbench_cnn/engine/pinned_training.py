"""Train a run's missing models in a child process with the math backends pinned
(:mod:`robustbench_cnn.train.pinned` says why and what is pinned), before the run prepares them:
the child fills the model cache, and the run then loads every model from it.

The child is started once per process and serves every run of it (one JSON request per line on
its stdin, one reply per line on its stdout; ``suite.train_child``), so torch is imported once. It
ends when this process closes the pipe (at exit, or when it dies); one that died is started again.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from robustbench_cnn.engine.context import RunContext
from robustbench_cnn.engine.prepare import untrained
from robustbench_cnn.train.cache import ModelCache
from robustbench_cnn.train.pinned import CHILD_ENV, PIN_ENV, PINNED, in_pinned_child, training_mode

log = logging.getLogger(__name__)

_lock = threading.Lock()
_server: list[subprocess.Popen] = []  # the serving child, once started


def _child() -> subprocess.Popen:
    if not _server or _server[0].poll() is not None:
        command = [sys.executable, "-m", "robustbench_cnn.engine.train_child"]
        env = {**os.environ, **PIN_ENV, CHILD_ENV: "1"}
        _server[:] = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)]
    return _server[0]


def _ask(request: dict) -> dict:
    """Send one request to the serving child and return its reply (``{"error": ...}`` if it has none).
    Interrupted (Ctrl-C), the child is stopped with it."""
    with _lock:
        child = _child()
        try:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(json.dumps(request) + "\n")
            child.stdin.flush()
            line = child.stdout.readline()
        except OSError as exc:
            line = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        except BaseException:
            child.kill()
            raise
    try:
        reply = json.loads(line) if line else {"error": f"the process ended (exit {child.wait()})"}
    except ValueError:
        reply = {"error": "an unreadable reply"}
    return reply if isinstance(reply, dict) else {"error": "an unreadable reply"}


def train_pinned(suite: Path, ctx: RunContext, cache_dir: Path, data_dir: Path | None) -> list[str]:
    """Train the models of the suite file ``suite`` that the cache lacks, in the pinned child, and
    return their names; a no-op (``[]``) where training is not pinned (GPU, non-x86,
    ``reproducible_training = false``), for a suite without a file, and when nothing needs
    training. If the child fails, the run trains those models itself, unpinned, and says so."""
    if training_mode(ctx.spec.performance.reproducible_training, ctx.device.type) != PINNED or in_pinned_child():
        return []
    if not suite.is_file():
        log.info("the suite has no file for the pinned training process; training in this process")
        return []
    todo = untrained(ctx, ModelCache(cache_dir))
    if not todo:
        return []
    log.info("training %s in a process pinned to AVX2 kernels and 2 threads (the same weights on any x86-64 CPU)",
             ", ".join(todo))  # fmt: skip
    reply = _ask({"suite": str(suite), "cache_dir": str(cache_dir), "seed": ctx.seed, "progress": ctx.progress,
                  "data_dir": None if data_dir is None else str(data_dir),
                  "zoo_dir": None if ctx.zoo_dir is None else str(ctx.zoo_dir)})  # fmt: skip
    trained = reply.get("trained")
    if reply.get("ok") is not True or not isinstance(trained, list):
        log.warning("pinned training failed (%s); training here instead (its weights then depend on this "
                    "machine's instruction set)", reply.get("error", "no reply"))  # fmt: skip
        return []
    return [str(name) for name in trained]
