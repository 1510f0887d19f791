"""The ``robustbench-cnn`` command line's grammar: every subcommand, its arguments and their help.

Imports nothing heavy (``--help`` must stay instant); the commands themselves live in :mod:`robustbench_cnn.cli.main`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robustbench_cnn import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustbench-cnn",
        description="How accurate, how robust and how fast is a CNN, before and after defense, compression and export.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_inspection(sub)
    _add_reporting(sub)
    _add_edge(sub)
    _add_zoo(sub)
    return parser


def _add_zoo_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zoo-dir", type=Path, default=None, metavar="DIR",
                   help="where checkpoint = 'zoo:NAME' files are (default: $ROBUSTBENCH_CNN_ZOO); never "
                   "downloaded")  # fmt: skip


def _add_zoo(sub) -> None:
    zoo = sub.add_parser("zoo", help="the local model zoo: published checkpoints and their published figures")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    lst = zoo_sub.add_parser("list", help="every zoo entry: dataset, preprocessing, published figures, source")
    lst.add_argument("--zoo-dir", type=Path, default=None, metavar="DIR",
                     help="also verify each file (default: $ROBUSTBENCH_CNN_ZOO)")  # fmt: skip
    mea = zoo_sub.add_parser("measure", help="measure a deployed-artifact entry (an edge build) on its own runtime")
    mea.add_argument("name", help="a zoo entry of kind artifact, e.g. mlperf_tiny_resnet8_int8")
    _add_zoo_dir(mea)
    mea.add_argument("--data-dir", type=Path, default=None, help="where the entry's dataset (or the .npz) is")
    mea.add_argument("--dataset", default="", help="dataset name (default: the entry's), e.g. npz")
    mea.add_argument("--data-path", default=None, help="with --dataset npz: the .npz file, relative to --data-dir")
    mea.add_argument("--eval-size", type=int, default=None, help="a seeded subset of the eval split")
    mea.add_argument("--eps", type=_fraction, nargs="*", default=[2 / 255, 8 / 255],
                     help="Linf budgets of the direct Square Attack (default 2/255 8/255; none: off)")  # fmt: skip
    mea.add_argument("--queries", type=int, default=100, help="Square Attack queries per image")
    mea.add_argument("--attack-size", type=int, default=100, help="images the Square Attack runs on")
    mea.add_argument("--no-latency", action="store_true", help="skip the batch-1 latency")
    mea.add_argument(
        "--out", type=Path, default=None, help="results root (default: $ROBUSTBENCH_CNN_RESULTS or ./results)"
    )


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="run a suite file and write results/<suite>/<run_id>/")
    run.add_argument("suite", type=Path, help="suite file (TOML), e.g. suites/smoke.toml")
    run.add_argument("--out", type=Path, default=None,
                     help="results root (default: $ROBUSTBENCH_CNN_RESULTS or ./results)")  # fmt: skip
    run.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: OUT/cache)")
    run.add_argument("--device", type=_device, default=None, metavar="auto|cpu|cuda|cuda:N",
                     help="override the suite's device")  # fmt: skip
    run.add_argument("--seed", type=int, default=None, help="override the suite's seed")
    run.add_argument("--data-dir", type=Path, default=None, help="override dataset.data_dir")
    _add_zoo_dir(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--resume", nargs="?", const="newest", default=None, metavar="RUN_DIR",
        help="continue an interrupted run (default: the newest of this suite), keeping its finished cells",
    )  # fmt: skip

    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local: in this process (default); ray: cells and shards as Ray tasks (pip install "
                     "'robustbench-cnn[ray]'; results and cache on a filesystem every worker sees)")  # fmt: skip
    run.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="with --executor ray: an existing cluster ('auto', or host:port); default: start a local one",
    )
    run.add_argument(
        "--gpus-per-cell",
        type=float,
        default=1.0,
        metavar="G",
        help="with --executor ray on CUDA: GPU share per training/attack/certify task (e.g. 0.25)",
    )
    run.add_argument("--no-report", action="store_true", help="skip report.md, its plots and the history store")
    run.add_argument("--no-supervise", action="store_true",
                     help="run in this process: a native crash (SIGSEGV, SIGABRT) then ends the run; by default a "
                     "child runs it, and a cell that crashes it twice is recorded failed and skipped")  # fmt: skip
    run.add_argument("--baseline", type=Path, default=None, metavar="CSV|RUN_DIR",
                     help="after the run, compare against this baseline and exit 1 on a regression")  # fmt: skip
    run.add_argument("--dry-run", action="store_true", help="print the plan (as `plan`) and run nothing")
    _add_work_flag(run)
    _add_tolerance_flags(run)


def _add_inspection(sub) -> None:
    pln = sub.add_parser("plan", help="validate a suite and show what `run` would do: models, cells, work")
    pln.add_argument("suite", type=Path, help="suite file (TOML)")
    pln.add_argument("--out", type=Path, default=None, help="results root whose model cache is consulted")
    pln.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: OUT/cache)")
    pln.add_argument("--seed", type=int, default=None, help="override the suite's seed")
    pln.add_argument("--data-dir", type=Path, default=None, help="override dataset.data_dir")
    _add_zoo_dir(pln)
    _add_work_flag(pln)

    lst = sub.add_parser("list", help="list registered datasets, models, attacks, defenses and compressions")
    lst.add_argument("-v", "--verbose", dest="params", action="store_true", help="also each plugin's parameters")

    cmp = sub.add_parser("compare", help="compare two runs; exit 0 (no regression), 1 (regression), 2 (bad input)")
    cmp.add_argument("base", type=Path, help="baseline run directory or results CSV")
    cmp.add_argument("new", type=Path, help="new run directory or results CSV")
    cmp.add_argument("--out", type=Path, default=None, help="also write the Markdown to this file")
    _add_tolerance_flags(cmp)


def _add_reporting(sub) -> None:
    rep = sub.add_parser("report", help="write report.md, report.html and PNG plots into a run directory")
    rep.add_argument("run_dir", type=Path)

    dash = sub.add_parser("dashboard", help="an HTML page of every run: trends per model variant, regressions")
    dash.add_argument("--results", type=Path, default=None, help="results root (default: $ROBUSTBENCH_CNN_RESULTS)")
    dash.add_argument("--out", type=Path, default=None, help="HTML file (default: RESULTS/dashboard.html)")

    exp = sub.add_parser("export-results", help="a run's manifest and rows as JSON, or logged to MLflow")
    exp.add_argument("run_dir", type=Path)
    exp.add_argument("--format", choices=("json", "mlflow"), default="json", dest="fmt")
    exp.add_argument("--out", type=Path, default=None,
                     help="JSON file (default RUN_DIR/results.json) or MLflow store (RUN_DIR/mlruns)")  # fmt: skip

    hist = sub.add_parser("history", help="one metric across the runs in the history store")
    hist.add_argument("--metric", required=True, help="e.g. robust_acc, clean_acc, latency_ms_p50")
    hist.add_argument("--model", default=None)
    hist.add_argument("--suite", default=None)
    hist.add_argument("--results", type=Path, default=None, help="results root holding history.sqlite")
    hist.add_argument("--plot", type=Path, default=None, metavar="PNG", help="also plot it to this file")


def _add_edge(sub) -> None:
    edge = sub.add_parser("edge", help="edge deployment: bundle a run's TFLite models (or an edge build) for a device")
    edge_sub = edge.add_subparsers(dest="edge_command", required=True)
    bundle = edge_sub.add_parser(
        "bundle", help="write the models, eval images (clean + adversarial), expectations and the validator"
    )
    bundle.add_argument("run_dir", type=Path, nargs="?", help="a finished run with TFLite exports")
    bundle.add_argument("--artifact", type=Path, help="instead of a run: one .tflite or .onnx made by any toolchain")
    bundle.add_argument("--data", metavar="EVAL.npz|DATASET",
                        help="--artifact: its eval set, an .npz of x uint8 (N, H, W, C), y; or a dataset name "
                        "(mnist, cifar10, ...: its eval split)")  # fmt: skip
    bundle.add_argument("--data-dir", type=Path, default=None,
                        help="--artifact with --data DATASET: where the dataset's files are")  # fmt: skip
    bundle.add_argument("--input-range", choices=("0..1", "0..255"), default="0..1",
                        help="--artifact: the pixel range the file takes (0..1)")  # fmt: skip
    bundle.add_argument("--eps", type=_fraction, nargs="*", default=[],
                        help="--artifact: Linf budgets of the host's direct Square rows (e.g. 2/255)")  # fmt: skip
    bundle.add_argument("--queries", type=int, default=100, help="--artifact: Square Attack queries (100)")
    bundle.add_argument("--out", type=Path, required=True, help="bundle directory (new or empty)")
    bundle.add_argument("--eval-size", type=int, default=None,
                        help="ship only the first N eval images (--data DATASET: its seeded subset of N)")  # fmt: skip
    bundle.add_argument("--accuracy-tol", type=float, default=0.01, help="allowed |accuracy - expected| (0.01)")
    bundle.add_argument("--agreement", type=float, default=0.99, help="minimum clean top-1 agreement (0.99)")
    bundle.add_argument("--adversarial-agreement", type=float, default=0.97,
                        help="minimum top-1 agreement on adversarial images (0.97)")  # fmt: skip
    bundle.add_argument("--force", action="store_true", help="replace a non-empty --out")
    bundle.add_argument("--include-failed-parity", action="store_true",
                        help="also bundle exports whose parity check failed (left out by default)")  # fmt: skip


def _fraction(text: str) -> float:
    from fractions import Fraction

    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 8/255") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: a Linf eps on [0, 1] images is in 0..1")
    return value


def _device(text: str) -> str:
    kind, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"'{text}' is not auto, cpu, cuda or cuda:N")


def _add_work_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-work", type=float, default=None, metavar="N",
                   help="refuse a run estimated above N image-passes (default 1e10; smoke is ~1e6)")  # fmt: skip


def _add_tolerance_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--acc-tol", type=float, default=2.0, help="accuracy drop tolerated, in points (default 2)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the accuracy test (default 0.05)")
    p.add_argument("--latency-ratio", type=float, default=2.0, help="median-latency slowdown tolerated (default 2.0)")
    p.add_argument(
        "--latency-floor-ms",
        type=float,
        default=0.5,
        help="a slowdown must also exceed this many ms to count (default 0.5)",
    )
    p.add_argument("--no-normalize-latency", action="store_true",
                   help="judge raw latency ratios, not relative to the batch size and runtime drift")  # fmt: skip
    p.add_argument("--latency-alpha", type=float, default=0.01,
                   help="significance of the Mann-Whitney U test on raw latency samples (default 0.01)")  # fmt: skip
    p.add_argument("--allow-removed", action="store_true",
                   help="judge a NEW table that lacks some baseline rows (default: refuse, exit 2)")  # fmt: skip
