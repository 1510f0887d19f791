"""Quiet runs: other libraries' log records and Python warnings go to ``run.log``, not the terminal.

Exporters and runtimes log freely at INFO/WARNING (onnxscript's rewriter, jax's "Unable to initialize
backend 'tpu'", quantizer notices, torch.export/dynamo chatter). Unless ``-v``, :func:`quiet_third_party`
puts a filter on the terminal's handlers that lets a third-party record through only at WARNING and above
(ERROR and above for the known-noisy ones), and routes ``warnings.warn`` into logging (``py.warnings``,
terminal threshold ERROR). Nothing is dropped at the source: :func:`run_log` attaches a file handler to
the root logger for the duration of a run, and it records every record at INFO and above (DEBUG with
``-v``), third-party ones and Python warnings included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Terminal thresholds of third-party loggers (a name covers its children); all others pass unfiltered.
THIRD_PARTY: dict[str, int] = {
    "onnxscript": logging.ERROR,
    "onnx_ir": logging.ERROR,
    "jax": logging.ERROR,
    "absl": logging.ERROR,
    "torch._dynamo": logging.ERROR,
    "torch._inductor": logging.ERROR,
    "torch.export": logging.ERROR,
    "torch.onnx": logging.WARNING,
    "torch._export": logging.ERROR,
    "litert": logging.ERROR,
    "ai_edge_litert": logging.ERROR,
    "ai_edge_torch": logging.ERROR,
    "ai_edge_quantizer": logging.ERROR,
    "litert_torch": logging.ERROR,
    "torchao": logging.ERROR,
    "tensorflow": logging.ERROR,
    "onnxruntime": logging.WARNING,
    "matplotlib": logging.WARNING,
    "PIL": logging.WARNING,
    "py.warnings": logging.ERROR,
}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def threshold(name: str) -> int | None:
    """The terminal threshold of a logger name (longest matching prefix), None for loggers not listed."""
    best = None
    for prefix, level in THIRD_PARTY.items():
        if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, level)
    return best[1] if best else None


class ThirdPartyFilter(logging.Filter):
    """Pass our records; pass a third-party record only at or above its logger's threshold."""

    def filter(self, record: logging.LogRecord) -> bool:
        level = threshold(record.name)
        return level is None or record.levelno >= level


_FILTER = ThirdPartyFilter()


def private_loggers() -> list[logging.Logger]:
    """Third-party loggers that print through their own handlers and never reach the root (torch's:
    ``torch``, ``torch.export``, ... have a stderr handler and ``propagate = False``)."""
    packages = {name.split(".")[0] for name in THIRD_PARTY}
    loggers = [logging.getLogger(n) for n, lg in list(logging.root.manager.loggerDict.items())
               if isinstance(lg, logging.Logger) and n.split(".")[0] in packages]  # fmt: skip
    return [lg for lg in loggers if lg.handlers and not lg.propagate]


def quiet_third_party(verbose: bool) -> None:
    """Filter third-party records on the terminal handlers (the root's, and those of third-party loggers that
    print on their own) unless ``verbose``. Call it again once such libraries are imported (:func:`run_log`
    does). Python warnings are routed into logging either way, so that :func:`run_log` records them."""
    logging.captureWarnings(True)
    handlers = logging.getLogger().handlers + [h for lg in private_loggers() for h in lg.handlers]
    for handler in handlers:
        if verbose:
            handler.removeFilter(_FILTER)
        elif _FILTER not in handler.filters and not isinstance(handler, logging.FileHandler):
            handler.addFilter(_FILTER)


@contextmanager
def run_log(run_dir: Path, verbose: bool = False) -> Iterator[Path]:
    """Append every log record (INFO and up; DEBUG if ``verbose``) and Python warning to ``run_dir/run.log``
    while the block runs; yields the log's path."""
    path = Path(run_dir) / "run.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    quiet = any(_FILTER in h.filters for h in logging.getLogger().handlers)
    if quiet:
        quiet_third_party(verbose=False)  # libraries imported since the CLI started have their own handlers now
    logging.captureWarnings(True)
    loggers = [logging.getLogger(), *private_loggers()]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield path
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
