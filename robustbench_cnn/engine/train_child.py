"""The pinned training process (started by :mod:`robustbench_cnn.engine.pinned_training` with
``train.pinned.PIN_ENV`` set): for each JSON request on stdin (a suite file, cache folder, seed,
data and zoo folders), prepare every model of the suite into the model cache, training the missing
ones, and answer one JSON line on stdout: ``{"ok": true, "trained": [names]}`` or ``{"error": "<one line>"}``. Logs go
to stderr. It ends at the end of its input."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from robustbench_cnn.config.load import load_suite
from robustbench_cnn.engine.prepare import prepare_model
from robustbench_cnn.engine.runner import RunOptions, build_context
from robustbench_cnn.errors import RobustBenchError, one_line
from robustbench_cnn.logs import quiet_third_party
from robustbench_cnn.models import Normalized
from robustbench_cnn.train.cache import ModelCache


def _path(value: Any) -> Path | None:
    return None if value is None else Path(str(value))


def train_suite(request: dict[str, Any]) -> list[str]:
    """Prepare (train where missing) every model of the request's suite into its cache; the names of
    those it trained (another run may have trained the rest meanwhile)."""
    loaded = load_suite(Path(str(request["suite"])), _path(request.get("zoo_dir")))
    cache_dir = Path(str(request["cache_dir"]))
    opts = RunOptions(out_root=Path(), cache_dir=cache_dir, device="cpu", seed=int(request["seed"]),
                      data_dir=_path(request.get("data_dir")), progress=bool(request.get("progress")))  # fmt: skip
    ctx, _ = build_context(loaded, opts)
    cache = ModelCache(cache_dir)
    models: dict[str, Normalized] = {}
    keys: dict[str, str] = {}
    trained = []
    for m in ctx.spec.models:
        models[m.name], info = prepare_model(ctx, m, cache, models, keys)
        keys[m.name] = info["key"]
        if info.get("cache") == "miss":
            trained.append(m.name)
    return trained


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)  # fmt: skip
    quiet_third_party(False)
    for line in sys.stdin:
        try:
            reply: dict[str, Any] = {"ok": True, "trained": train_suite(json.loads(line))}
        except (RobustBenchError, FloatingPointError, OSError, ValueError, KeyError) as exc:
            reply = {"error": one_line(str(exc)) or type(exc).__name__}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
