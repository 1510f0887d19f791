"""``robustbench-cnn``: run suites and list what is available. Heavy imports happen per command."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from robustbench_cnn.cli.parser import build_parser
from robustbench_cnn.engine import crashes  # standard library only: the supervisor starts before torch

if TYPE_CHECKING:
    from robustbench_cnn.config.load import LoadedSuite

log = logging.getLogger("robustbench_cnn")


def _default_out() -> Path:
    return Path(os.environ.get("ROBUSTBENCH_CNN_RESULTS", "results"))


def _folder(path: Path, flag: str) -> Path:
    """``path`` resolved, refused in one line when it exists and is not a folder."""
    from robustbench_cnn.errors import InputError

    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file, not a folder; choose a folder (it is created if missing)")
    return path


def _out_file(path: Path | None, flag: str) -> Path | None:
    """An output file path, refused in one line when it is a folder or its parent is not one."""
    from robustbench_cnn.errors import InputError

    if path is None:
        return None
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; give a file path, e.g. {path / 'compare.md'}")
    if not path.resolve().parent.is_dir():
        raise InputError(f"{flag} {path}: its folder {path.resolve().parent} does not exist; create it first")
    return path


def _zoo_dir(args: argparse.Namespace) -> Path | None:
    from robustbench_cnn.zoo import zoo_dir

    return zoo_dir(args.zoo_dir)


def _compare(base: Path, new: Path, args: argparse.Namespace, out: Path | None = None) -> int:
    from robustbench_cnn.report.compare import (
        check_coverage,
        compare,
        describe,
        load_run,
        render,
        stale_models,
    )
    from robustbench_cnn.report.tolerances import Tolerances

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


def _plan(args: argparse.Namespace, loaded: LoadedSuite, out: Path) -> tuple[str, str]:
    """The plan's text, and the one-line refusal when its work exceeds ``--max-work`` (else "")."""
    from robustbench_cnn.engine.planning import DEFAULT_MAX_WORK, make_plan, render

    cache = _folder(args.cache_dir or out / "cache", "--cache-dir")
    plan = make_plan(loaded, cache, args.seed, args.data_dir.resolve() if args.data_dir else None)
    max_work = DEFAULT_MAX_WORK if args.max_work is None else args.max_work
    if plan.total_work <= max_work:
        return render(plan, max_work), ""
    refusal = (f"{loaded.path}: about {plan.total_work:.3g} image-passes of work exceeds --max-work {max_work:.3g}; "
               "shrink the suite (see `robustbench-cnn plan`) or raise --max-work")  # fmt: skip
    return render(plan, max_work), refusal


def _cmd_plan(args: argparse.Namespace) -> int:
    from robustbench_cnn.config.load import load_suite

    loaded = load_suite(args.suite, _zoo_dir(args))
    text, _ = _plan(args, loaded, _folder(args.out or _default_out(), "--out"))
    sys.stdout.write(text)
    return 0


def _check_checkpoints(loaded: LoadedSuite) -> None:
    """Read every user checkpoint of the suite: a missing, corrupt, pickled or non-finite one is one line
    and exit 2 before anything is written (whether it fits its model is checked when the run builds it)."""
    import zipfile

    import torch
    from safetensors import SafetensorError

    from robustbench_cnn.config.spec import NEEDS_PREPROCESS
    from robustbench_cnn.errors import SuiteError, one_line
    from robustbench_cnn.models.checkpoint import UnusableCheckpoint, read_state, resolve_format

    for i, m in enumerate(loaded.spec.models):
        path = loaded.checkpoint(i)
        if path is None:
            continue
        try:
            state, _ = read_state(path)
        except (SafetensorError, RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise UnusableCheckpoint(f"checkpoint {path} is corrupt: {type(exc).__name__}; re-export or "
                                     "re-download it") from None  # fmt: skip
        bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            raise UnusableCheckpoint(f"checkpoint {path}: {one_line(bad, 200)} holds NaN or infinite values; the "
                                     "weights are unusable")  # fmt: skip
        if m.preprocess is None and resolve_format(state, m.checkpoint_format) == "net":
            raise SuiteError(f"{loaded.path}: models[{i}].preprocess: {path.name}: {NEEDS_PREPROCESS}")


def _cmd_run(args: argparse.Namespace) -> int:
    from robustbench_cnn.config.load import load_suite

    loaded = load_suite(args.suite, _zoo_dir(args))
    out = _folder(args.out or _default_out(), "--out")
    text, refusal = _plan(args, loaded, out)
    if args.dry_run:
        sys.stdout.write(text)
        return 0
    if refusal:
        from robustbench_cnn.errors import SuiteError

        raise SuiteError(refusal)
    from robustbench_cnn.config.paths import run_root
    from robustbench_cnn.engine.runner import RunOptions, newest_run, run_suite
    from robustbench_cnn.report.summary import compact, finish_run

    run_root(out, loaded.spec.name)  # refuses a results folder that would resolve outside --out
    _check_checkpoints(loaded)  # before a run directory exists

    resume = None
    if os.environ.get(crashes.RESUME_ENV):  # a supervised child resumed after a native crash
        args.resume = os.environ[crashes.RESUME_ENV]
    if args.resume is not None:
        resume = newest_run(out, loaded.spec.name) if args.resume == "newest" else Path(args.resume).resolve()
        if not resume.is_dir():
            from robustbench_cnn.errors import InputError

            raise InputError(f"--resume {resume}: no such run folder; nothing to resume (omit --resume to start a "
                             "new run)")  # fmt: skip
    opts = RunOptions(
        out_root=out,
        cache_dir=_folder(args.cache_dir or out / "cache", "--cache-dir"),
        device=args.device,
        seed=args.seed,
        data_dir=args.data_dir.resolve() if args.data_dir else None,
        progress=not args.no_progress and sys.stderr.isatty(),
        resume=resume,
        executor=args.executor,
        ray_address=args.ray_address,
        gpus_per_cell=args.gpus_per_cell,
        finish=finish_run,
    )
    result = run_suite(loaded, opts)

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
    return _compare(args.base, args.new, args, _out_file(args.out, "--out"))


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
    out = _out_file(args.out, "--out")
    sys.stdout.write(f"dashboard: {write_dashboard(root, out.resolve() if out else None)}\n")
    return 0


def _cmd_export_results(args: argparse.Namespace) -> int:
    from robustbench_cnn.report.export_results import export_json, export_mlflow

    run_dir = args.run_dir.resolve()
    out = args.out.resolve() if args.out else None
    if out is not None:
        out = _out_file(out, "--out") if args.fmt == "json" else _folder(out, "--out")
    if args.fmt == "json":
        sys.stdout.write(f"json: {export_json(run_dir, out)}\n")
    else:
        sys.stdout.write(f"mlflow run: {export_mlflow(run_dir, out)} in {out or run_dir / 'mlruns'}\n")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from robustbench_cnn.report.history import check_names, plot, query

    db = _folder(args.results or _default_out(), "--results") / "history.sqlite"
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
    from robustbench_cnn.cli.bundle import build_bundle

    out = build_bundle(args.run_dir, args.out.resolve(), args.eval_size, args.accuracy_tol, args.agreement,
                       args.adversarial_agreement, args.force, args.include_failed_parity)  # fmt: skip
    sys.stdout.write(f"bundle: {out}\nvalidate it with: cd {out} && python -m robustbench_cnn.edge validate .\n")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    if args.zoo_command == "list":
        from robustbench_cnn.zoo.listing import render_list

        sys.stdout.write(render_list(_zoo_dir(args)))
        return 0
    from robustbench_cnn.cli.zoo import MeasureOptions, measure

    opts = MeasureOptions(args.name, args.data_dir.resolve() if args.data_dir else None, _zoo_dir(args),
                          _folder(args.out or _default_out(), "--out"), args.dataset, args.data_path, args.eval_size,
                          tuple(args.eps), args.queries, args.attack_size, latency=not args.no_latency)  # fmt: skip
    run_dir, text = measure(opts)
    sys.stdout.write(text + f"results: {run_dir}\n")
    return 0


def _parameters(entry: object) -> str:
    """``name=default`` of a plugin's parameters: its spec's fields, else its factory's keywords."""
    import inspect

    fields = getattr(getattr(entry, "spec", None), "model_fields", None)
    if fields is not None:
        items = [(k, "required" if f.is_required() else repr(f.get_default(call_default_factory=True)))
                 for k, f in fields.items() if k != "name"]  # fmt: skip
    elif callable(entry):
        skip = ("num_classes", "in_channels", "model", "data_dir", "download", "split_seed")
        params = inspect.signature(entry).parameters.values()
        items = [(p.name, "required" if p.default is p.empty else repr(p.default)) for p in params
                 if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]  # fmt: skip
    else:
        items = []
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
    from robustbench_cnn.logs import quiet_third_party

    quiet_third_party(args.verbose)
    logging.raiseExceptions = False  # a log file on a full disk drops records; it never prints a traceback
    from robustbench_cnn.errors import RobustBenchError, one_line

    if argv is None and supervise(args):  # the command line (a programmatic main(argv) runs in-process)
        return crashes.supervised_run(sys.argv[1:])
    try:
        commands = {"run": _cmd_run, "plan": _cmd_plan, "list": _cmd_list, "compare": _cmd_compare,
                    "report": _cmd_report, "history": _cmd_history, "edge": _cmd_edge, "dashboard": _cmd_dashboard,
                    "export-results": _cmd_export_results, "zoo": _cmd_zoo}  # fmt: skip
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
