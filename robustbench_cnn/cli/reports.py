"""The commands that read finished runs: compare, report, dashboard, export-results, history."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from robustbench_cnn.cli.options import default_out, folder, out_file
from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.report.compare import check_coverage, compare, describe, load_run, render, stale_models
from robustbench_cnn.report.dashboard import write_dashboard
from robustbench_cnn.report.export_results import export_json, export_mlflow
from robustbench_cnn.report.history import check_names, plot, query
from robustbench_cnn.report.plots import write_report
from robustbench_cnn.report.tolerances import Tolerances

log = logging.getLogger("robustbench_cnn")


def compare_runs(base: Path, new: Path, args: argparse.Namespace, out: Path | None = None) -> int:
    b, n = load_run(base), load_run(new)
    tol = Tolerances(args.acc_tol, args.alpha, args.latency_ratio, args.latency_floor_ms, not args.no_normalize_latency,
                     args.latency_alpha)  # fmt: skip
    joined, added, removed, env = compare(b, n, tol)
    check_coverage(b, n, removed, args.allow_removed)
    text = render(joined, added, removed, env, b, n)
    sys.stdout.write(text)
    if out is not None:
        out.write_text(text)
    if env:
        log.warning("environments differ (%s): latencies not compared", "; ".join(env))
    for line in stale_models(b, n):
        log.warning("stale baseline for %s", line)
    regressions = joined[joined.verdict == "REGRESSION"]
    for _, r in regressions.iterrows():
        log.error("regression: %s: %.4g -> %.4g", describe(r), r.value_base, r.value_new)
    turned = joined.attrs["turned_unreliable"]  # models turning unreliable (computed by compare)
    for line in turned:
        log.error("regression: %s (reliable in the baseline)", line)
    return 1 if len(regressions) or turned else 0


def cmd_compare(args: argparse.Namespace) -> int:
    return compare_runs(args.base, args.new, args, out_file(args.out, "--out"))


def cmd_report(args: argparse.Namespace) -> int:
    if not (args.run_dir / "results.csv").is_file():
        raise RobustBenchError(f"{args.run_dir}: not a run directory (no results.csv)")
    sys.stdout.write(f"{write_report(args.run_dir)}\n{args.run_dir / 'report.html'}\n")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    root = (args.results or default_out()).resolve()
    out = out_file(args.out, "--out")
    sys.stdout.write(f"dashboard: {write_dashboard(root, out.resolve() if out else None)}\n")
    return 0


def cmd_export_results(args: argparse.Namespace) -> int:
    run_dir = args.run_dir.resolve()
    out = args.out.resolve() if args.out else None
    if out is not None:
        out = out_file(out, "--out") if args.fmt == "json" else folder(out, "--out")
    if args.fmt == "json":
        sys.stdout.write(f"json: {export_json(run_dir, out)}\n")
    else:
        sys.stdout.write(f"mlflow run: {export_mlflow(run_dir, out)} in {out or run_dir / 'mlruns'}\n")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    db = folder(args.results or default_out(), "--results") / "history.sqlite"
    check_names(db, args.metric, args.model)
    df = query(db, args.metric, args.model, args.suite)
    if df.empty:
        sys.stderr.write(f"robustbench-cnn: no '{args.metric}' rows in {db}\n")
        return 1
    cols = ["started", "run_id", "model", "defense", "format", "runtime", "compression", "attack", "norm", "eps",
            "batch_size", "value"]  # fmt: skip
    sys.stdout.write(df[cols].to_markdown(index=False, floatfmt=".4g") + "\n")
    if args.plot is not None:
        sys.stdout.write(f"plot: {plot(df, args.plot, args.metric)}\n")
    return 0
