"""``robustbench-cnn``: run suites and list what is available. Heavy imports happen per command."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from robustbench_cnn import __version__

if TYPE_CHECKING:
    from robustbench_cnn.suite.load import LoadedSuite

log = logging.getLogger("robustbench_cnn")


def _default_out() -> Path:
    return Path(os.environ.get("ROBUSTBENCH_CNN_RESULTS", "results"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustbench-cnn",
        description="How accurate, how robust and how fast is a CNN, before and after defense, compression and export.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite file and write results/<suite>/<run_id>/")
    run.add_argument("suite", type=Path, help="suite file (TOML), e.g. suites/smoke.toml")
    run.add_argument("--out", type=Path, default=None,
                     help="results root (default: $ROBUSTBENCH_CNN_RESULTS or ./results)")  # fmt: skip
    run.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: OUT/cache)")
    run.add_argument("--device", type=_device, default=None, metavar="auto|cpu|cuda|cuda:N",
                     help="override the suite's device")  # fmt: skip
    run.add_argument("--seed", type=int, default=None, help="override the suite's seed")
    run.add_argument("--data-dir", type=Path, default=None, help="override dataset.data_dir")
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
    run.add_argument("--baseline", type=Path, default=None, metavar="CSV|RUN_DIR",
                     help="after the run, compare against this baseline and exit 1 on a regression")  # fmt: skip
    run.add_argument("--dry-run", action="store_true", help="print the plan (as `plan`) and run nothing")
    _add_work_flag(run)
    _add_tolerance_flags(run)

    pln = sub.add_parser("plan", help="validate a suite and show what `run` would do: models, cells, work")
    pln.add_argument("suite", type=Path, help="suite file (TOML)")
    pln.add_argument("--out", type=Path, default=None, help="results root whose model cache is consulted")
    pln.add_argument("--cache-dir", type=Path, default=None, help="model cache (default: OUT/cache)")
    pln.add_argument("--seed", type=int, default=None, help="override the suite's seed")
    pln.add_argument("--data-dir", type=Path, default=None, help="override dataset.data_dir")
    _add_work_flag(pln)

    lst = sub.add_parser("list", help="list registered datasets, models, attacks, defenses and compressions")
    lst.add_argument("-v", "--verbose", dest="params", action="store_true", help="also each plugin's parameters")

    cmp = sub.add_parser("compare", help="compare two runs; exit 0 (no regression), 1 (regression), 2 (bad input)")
    cmp.add_argument("base", type=Path, help="baseline run directory or results CSV")
    cmp.add_argument("new", type=Path, help="new run directory or results CSV")
    cmp.add_argument("--out", type=Path, default=None, help="also write the Markdown to this file")
    _add_tolerance_flags(cmp)

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

    edge = sub.add_parser("edge", help="edge deployment: bundle a run's TFLite models for a device")
    edge_sub = edge.add_subparsers(dest="edge_command", required=True)
    bundle = edge_sub.add_parser(
        "bundle", help="write .tflite models, eval images (clean + adversarial), expectations and the validator"
    )
    bundle.add_argument("run_dir", type=Path, help="a finished run with TFLite exports")
    bundle.add_argument("--out", type=Path, required=True, help="bundle directory (new or empty)")
    bundle.add_argument("--eval-size", type=int, default=None, help="ship only the first N eval images")
    bundle.add_argument("--accuracy-tol", type=float, default=0.01, help="allowed |accuracy - expected| (0.01)")
    bundle.add_argument("--agreement", type=float, default=0.99, help="minimum clean top-1 agreement (0.99)")
    bundle.add_argument("--adversarial-agreement", type=float, default=0.97,
                        help="minimum top-1 agreement on adversarial images (0.97)")  # fmt: skip
    bundle.add_argument("--force", action="store_true", help="replace a non-empty --out")
    bundle.add_argument("--include-failed-parity", action="store_true",
                        help="also bundle exports whose parity check failed (left out by default)")  # fmt: skip
    return parser


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


def _compare(base: Path, new: Path, args: argparse.Namespace, out: Path | None = None) -> int:
    from robustbench_cnn.report.compare import Tolerances, check_coverage, compare, describe, load_run, render

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
    regressions = joined[joined.verdict == "REGRESSION"]
    for _, r in regressions.iterrows():
        log.error("regression: %s: %.4g -> %.4g", describe(r), r.value_base, r.value_new)
    return 1 if len(regressions) else 0


def _plan(args: argparse.Namespace, loaded: LoadedSuite, out: Path) -> tuple[str, str]:
    """The plan's text, and the one-line refusal when its work exceeds ``--max-work`` (else "")."""
    from robustbench_cnn.suite.plan_cmd import DEFAULT_MAX_WORK, make_plan, render

    cache = (args.cache_dir or out / "cache").resolve()
    plan = make_plan(loaded, cache, args.seed, args.data_dir.resolve() if args.data_dir else None)
    max_work = DEFAULT_MAX_WORK if args.max_work is None else args.max_work
    if plan.total_work <= max_work:
        return render(plan, max_work), ""
    refusal = (f"{loaded.path}: about {plan.total_work:.3g} image-passes of work exceeds --max-work {max_work:.3g}; "
               "shrink the suite (see `robustbench-cnn plan`) or raise --max-work")  # fmt: skip
    return render(plan, max_work), refusal


def _cmd_plan(args: argparse.Namespace) -> int:
    from robustbench_cnn.suite.load import load_suite

    loaded = load_suite(args.suite)
    text, _ = _plan(args, loaded, (args.out or _default_out()).resolve())
    sys.stdout.write(text)
    return 0


def _check_checkpoints(loaded: LoadedSuite) -> None:
    """Read every user checkpoint of the suite: a missing, corrupt, pickled or non-finite one is one line
    and exit 2 before anything is written (whether it fits its model is checked when the run builds it)."""
    import zipfile

    import torch
    from safetensors import SafetensorError

    from robustbench_cnn.models.checkpoint import UnusableCheckpoint, read_state

    for m in loaded.spec.models:
        path = loaded.resolve(m.checkpoint)
        if path is None:
            continue
        try:
            state, _ = read_state(path)
        except (SafetensorError, RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise UnusableCheckpoint(f"checkpoint {path} is corrupt: {type(exc).__name__}; re-export or "
                                     "re-download it") from None  # fmt: skip
        bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise UnusableCheckpoint(f"checkpoint {path}: {bad} holds NaN or infinite values; the weights are unusable")


def _cmd_run(args: argparse.Namespace) -> int:
    from robustbench_cnn.suite.load import load_suite

    loaded = load_suite(args.suite)
    out = (args.out or _default_out()).resolve()
    text, refusal = _plan(args, loaded, out)
    if args.dry_run:
        sys.stdout.write(text)
        return 0
    if refusal:
        from robustbench_cnn.errors import SuiteError

        raise SuiteError(refusal)
    from robustbench_cnn.suite.paths import run_root
    from robustbench_cnn.suite.runner import RunOptions, newest_run, run_suite

    run_root(out, loaded.spec.name)  # refuses a results folder that would resolve outside --out
    _check_checkpoints(loaded)  # before a run directory exists

    resume = None
    if args.resume is not None:
        resume = newest_run(out, loaded.spec.name) if args.resume == "newest" else Path(args.resume).resolve()
    opts = RunOptions(
        out_root=out,
        cache_dir=(args.cache_dir or out / "cache").resolve(),
        device=args.device,
        seed=args.seed,
        data_dir=args.data_dir.resolve() if args.data_dir else None,
        progress=not args.no_progress and sys.stderr.isatty(),
        resume=resume,
        executor=args.executor,
        ray_address=args.ray_address,
        gpus_per_cell=args.gpus_per_cell,
    )
    result = run_suite(loaded, opts)
    from robustbench_cnn.report.summary import compact

    sys.stdout.write(compact(result.table, result.manifest))  # the wide table stays in summary.md
    if not args.no_report:
        from robustbench_cnn.report.history import append
        from robustbench_cnn.report.plots import write_report

        report = write_report(result.run_dir)
        append(out / "history.sqlite", result.table, result.manifest["started"])
        sys.stdout.write(f"\nreport: {report} and {report.with_suffix('.html')}\n")
    sys.stdout.write(f"results: {result.run_dir}\n")
    if args.baseline is not None:
        code = _compare(args.baseline, result.run_dir, args, out=result.run_dir / "compare.md")
        if code:
            return code
    failed = result.manifest.get("failed_cells", [])
    if failed:
        sys.stderr.write(f"robustbench-cnn: {len(failed)} cell(s) failed; see failed_cells in manifest.json\n")
        return 1
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    return _compare(args.base, args.new, args, args.out)


def _cmd_report(args: argparse.Namespace) -> int:
    from robustbench_cnn.report.plots import write_report

    if not (args.run_dir / "results.csv").is_file():
        from robustbench_cnn.errors import RobustBenchError

        raise RobustBenchError(f"{args.run_dir}: not a run directory (no results.csv)")
    sys.stdout.write(f"{write_report(args.run_dir)}\n{args.run_dir / 'report.html'}\n")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from robustbench_cnn.report.dashboard import write_dashboard

    root = (args.results or _default_out()).resolve()
    sys.stdout.write(f"dashboard: {write_dashboard(root, args.out.resolve() if args.out else None)}\n")
    return 0


def _cmd_export_results(args: argparse.Namespace) -> int:
    from robustbench_cnn.report.export_results import export_json, export_mlflow

    run_dir = args.run_dir.resolve()
    out = args.out.resolve() if args.out else None
    if args.fmt == "json":
        sys.stdout.write(f"json: {export_json(run_dir, out)}\n")
    else:
        sys.stdout.write(f"mlflow run: {export_mlflow(run_dir, out)} in {out or run_dir / 'mlruns'}\n")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from robustbench_cnn.report.history import check_names, plot, query

    db = (args.results or _default_out()).resolve() / "history.sqlite"
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


def _cmd_edge(args: argparse.Namespace) -> int:
    from robustbench_cnn.export.bundle import build_bundle

    out = build_bundle(args.run_dir, args.out.resolve(), args.eval_size, args.accuracy_tol, args.agreement,
                       args.adversarial_agreement, args.force, args.include_failed_parity)  # fmt: skip
    sys.stdout.write(f"bundle: {out}\nvalidate it with: cd {out} && python -m robustbench_cnn.edge validate .\n")
    return 0


def _parameters(entry: object) -> str:
    """``name=default`` of a plugin's parameters: its spec's fields, else its factory's keywords."""
    import inspect

    fields = getattr(getattr(entry, "spec", None), "model_fields", None)
    if fields is not None:
        items = [(k, "required" if f.is_required() else repr(f.get_default(call_default_factory=True)))
                 for k, f in fields.items() if k != "name"]  # fmt: skip
    else:
        skip = ("num_classes", "in_channels", "model", "data_dir", "download", "split_seed")
        params = inspect.signature(entry).parameters.values()
        items = [(p.name, "required" if p.default is p.empty else repr(p.default)) for p in params
                 if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]  # fmt: skip
    return ", ".join(f"{k}={v}" for k, v in items) or "(no parameters)"


def _cmd_list(args: argparse.Namespace) -> int:
    from robustbench_cnn.attacks import ATTACKS
    from robustbench_cnn.compress import COMPRESSORS
    from robustbench_cnn.data import DATASETS
    from robustbench_cnn.defenses import DEFENSES
    from robustbench_cnn.models import MODELS

    registries = (("datasets", DATASETS), ("models", MODELS), ("attacks", ATTACKS), ("defenses", DEFENSES),
                  ("compressions", COMPRESSORS))  # fmt: skip
    for title, reg in registries:
        sys.stdout.write(f"{title}:\n")
        for name in reg.names():
            doc = (reg.get(name).__doc__ or "").strip().splitlines()
            sys.stdout.write(f"  {name:<14} {doc[0] if doc else ''}\n")
            if args.params:
                sys.stdout.write(f"  {'':<14}   {_parameters(reg.get(name))}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from robustbench_cnn.logs import quiet_third_party

    quiet_third_party(args.verbose)
    logging.raiseExceptions = False  # a log file on a full disk drops records; it never prints a traceback
    from robustbench_cnn.errors import RobustBenchError, one_line

    try:
        commands = {"run": _cmd_run, "plan": _cmd_plan, "list": _cmd_list, "compare": _cmd_compare,
                    "report": _cmd_report, "history": _cmd_history, "edge": _cmd_edge, "dashboard": _cmd_dashboard,
                    "export-results": _cmd_export_results}  # fmt: skip
        return commands[args.command](args)
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
