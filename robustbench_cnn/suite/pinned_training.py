"""Train a run's missing models in a child process with the math backends pinned
(:mod:`robustbench_cnn.train.pinned` says why and what is pinned), before the run prepares them:
the child fills the model cache, and the run then loads every model from it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from robustbench_cnn.suite.context import RunContext
from robustbench_cnn.suite.prepare import untrained
from robustbench_cnn.train.cache import ModelCache
from robustbench_cnn.train.pinned import CHILD_ENV, PIN_ENV, PINNED, in_pinned_child, training_mode

log = logging.getLogger(__name__)


def train_pinned(suite: Path, ctx: RunContext, cache_dir: Path, data_dir: Path | None) -> None:
    """Train the models of the suite file ``suite`` that the cache lacks, in a pinned child; a no-op
    where training is not pinned (GPU, non-x86, ``reproducible_training = false``), for a suite
    without a file, and when nothing needs training. If the child fails, the run trains those
    models itself, unpinned, and says so."""
    if training_mode(ctx.spec.performance.reproducible_training, ctx.device.type) != PINNED or in_pinned_child():
        return
    if not suite.is_file():
        log.info("the suite has no file for a pinned training process; training in this process")
        return
    todo = untrained(ctx, ModelCache(cache_dir))
    if not todo:
        return
    command = [sys.executable, "-m", "robustbench_cnn.suite.train_child", str(suite), "--cache-dir", str(cache_dir),
               "--seed", str(ctx.seed)]  # fmt: skip
    command += ["--data-dir", str(data_dir)] if data_dir is not None else []
    command += ["--zoo-dir", str(ctx.zoo_dir)] if ctx.zoo_dir is not None else []
    command += [] if ctx.progress else ["--no-progress"]
    log.info("training %s in a process pinned to AVX2 kernels and 2 threads (reproducible on any x86-64 CPU)",
             ", ".join(todo))  # fmt: skip
    code = subprocess.run(command, env={**os.environ, **PIN_ENV, CHILD_ENV: "1"}, check=False).returncode
    if code != 0:
        log.warning("the pinned training process exited %d; training here instead (its weights then depend on "
                    "this machine's instruction set)", code)  # fmt: skip
