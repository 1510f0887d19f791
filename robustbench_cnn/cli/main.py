"""``robustbench-cnn``: parse, dispatch to the command's module (:data:`COMMANDS`), turn errors into one line
and an exit code, and supervise a local ``run`` (:mod:`robustbench_cnn.engine.crashes`)."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Callable

from robustbench_cnn.cli.parser import build_parser
from robustbench_cnn.engine import crashes  # standard library only: the supervisor starts before torch
from robustbench_cnn.errors import RobustBenchError, one_line
from robustbench_cnn.logs import quiet_third_party

log = logging.getLogger("robustbench_cnn")


# each command's module is imported when the command runs: ``--help`` and a torch-free command stay fast
COMMANDS = {
    "run": "robustbench_cnn.cli.runs:cmd_run", "plan": "robustbench_cnn.cli.runs:cmd_plan",
    "compare": "robustbench_cnn.cli.reports:cmd_compare", "report": "robustbench_cnn.cli.reports:cmd_report",
    "dashboard": "robustbench_cnn.cli.reports:cmd_dashboard", "history": "robustbench_cnn.cli.reports:cmd_history",
    "export-results": "robustbench_cnn.cli.reports:cmd_export_results",
    "list": "robustbench_cnn.cli.catalog:cmd_list", "zoo": "robustbench_cnn.cli.catalog:cmd_zoo",
    "edge": "robustbench_cnn.cli.catalog:cmd_edge",
}  # fmt: skip


def command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs command ``name`` (its module imported now)."""
    module, _, attr = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def supervise(args: argparse.Namespace) -> bool:
    """Whether this ``run`` process supervises a child that runs the suite (see ``suite.crashes``): a
    local run, not already a child, not a dry run, not ``--no-supervise``."""
    return (args.command == "run" and not args.dry_run and args.executor == "local" and not args.no_supervise
            and os.environ.get(crashes.CHILD_ENV) != "1")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    quiet_third_party(args.verbose)
    logging.raiseExceptions = False  # a log file on a full disk drops records; it never prints a traceback
    if argv is None and supervise(args):  # the command line (a programmatic main(argv) runs in-process)
        return crashes.supervised_run(sys.argv[1:])
    try:
        return command(args.command)(args)
    except RobustBenchError as exc:
        for line in getattr(exc, "problems", None) or (one_line(str(exc)),):
            sys.stderr.write(f"robustbench-cnn: error: {line}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        resume = f"; continue with: robustbench-cnn run {args.suite} --resume" if args.command == "run" else ""
        sys.stderr.write(one_line(f"robustbench-cnn: interrupted; finished results were kept{resume}") + "\n")
        return 130
    except FloatingPointError as exc:  # training diverged; the message names the fix
        sys.stderr.write(f"robustbench-cnn: error: {one_line(str(exc))}\n")
        return 1
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRORS:
            raise
        where = exc.filename or getattr(args, "out", None) or "the results directory"  # a failed write names no file
        sys.stderr.write(one_line(f"robustbench-cnn: error: {where}: {exc.strerror}; check its permissions and "
                                  "free space, or choose another --out") + "\n")  # fmt: skip
        return 2


# EFBIG: a file size limit (ulimit -f) reached, which is how the tests simulate a full disk
_STORAGE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENAMETOOLONG}


if __name__ == "__main__":
    raise SystemExit(main())
