"""The pinned training child (started by :mod:`robustbench_cnn.suite.pinned_training` with
``train.pinned.PIN_ENV`` set): prepare every model of a suite into the model cache, training the
missing ones, and exit 0; any error is one line on stderr and exit 1 (the run then trains itself)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from robustbench_cnn.errors import RobustBenchError, one_line
from robustbench_cnn.logs import quiet_third_party
from robustbench_cnn.models import Normalized
from robustbench_cnn.suite.load import load_suite
from robustbench_cnn.suite.prepare import prepare_model
from robustbench_cnn.suite.runner import RunOptions, build_context
from robustbench_cnn.train.cache import ModelCache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robustbench_cnn.suite.train_child")
    parser.add_argument("suite", type=Path)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--zoo-dir", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")  # fmt: skip
    quiet_third_party(False)
    try:
        loaded = load_suite(args.suite, args.zoo_dir)
        opts = RunOptions(out_root=Path(), cache_dir=args.cache_dir, device="cpu", seed=args.seed,
                          data_dir=args.data_dir, progress=not args.no_progress)  # fmt: skip
        ctx, _ = build_context(loaded, opts)
        cache = ModelCache(args.cache_dir)
        models: dict[str, Normalized] = {}
        keys: dict[str, str] = {}
        for m in ctx.spec.models:
            models[m.name], info = prepare_model(ctx, m, cache, models, keys)
            keys[m.name] = info["key"]
    except (RobustBenchError, FloatingPointError, OSError) as exc:
        sys.stderr.write(f"pinned training: {one_line(str(exc))}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
