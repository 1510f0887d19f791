"""``robustbench-cnn``: run suites and list what is available. Heavy imports happen per command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("robustbench_cnn")


def _default_out() -> Path:
    return Path(os.environ.get("ROBUSTBENCH_CNN_RESULTS", "results"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustbench-cnn",
        description="How accurate, how robust and how fast is a CNN, before and after defense, compression and export.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite file and write results/<suite>/<run_id>/")
    run.add_argument("suite", type=Path, help="suite file (TOML), e.g. suites/smoke.toml")
    run.add_argument("--out", type=Path, default=None,
                     help="results root (default: $ROBUSTBENCH_CNN_RESULTS or ./results)")  # fmt: skip
    run.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: OUT/cache)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="override the suite's device")
    run.add_argument("--seed", type=int, default=None, help="override the suite's seed")
    run.add_argument("--data-dir", type=Path, default=None, help="override dataset.data_dir")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    sub.add_parser("list", help="list registered datasets, models and attacks")
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from robustbench_cnn.suite.load import load_suite
    from robustbench_cnn.suite.runner import RunOptions, run_suite

    loaded = load_suite(args.suite)
    out = (args.out or _default_out()).resolve()
    opts = RunOptions(
        out_root=out,
        cache_dir=(args.cache_dir or out / "cache").resolve(),
        device=args.device,
        seed=args.seed,
        data_dir=args.data_dir.resolve() if args.data_dir else None,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    result = run_suite(loaded, opts)
    sys.stdout.write((result.run_dir / "summary.md").read_text())
    sys.stdout.write(f"\nresults: {result.run_dir}\n")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from robustbench_cnn.attacks import ATTACKS
    from robustbench_cnn.data import DATASETS
    from robustbench_cnn.models import MODELS

    for title, reg in (("datasets", DATASETS), ("models", MODELS), ("attacks", ATTACKS)):
        sys.stdout.write(f"{title}:\n")
        for name in reg.names():
            doc = (reg.get(name).__doc__ or "").strip().splitlines()
            sys.stdout.write(f"  {name:<14} {doc[0] if doc else ''}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from robustbench_cnn.errors import RobustBenchError

    try:
        return {"run": _cmd_run, "list": _cmd_list}[args.command](args)
    except RobustBenchError as exc:
        sys.stderr.write(f"robustbench-cnn: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("robustbench-cnn: interrupted; finished results were kept\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
