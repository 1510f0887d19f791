"""The commands that run or plan a suite: ``run`` (with its pre-flight checks of checkpoints) and ``plan``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from safetensors import SafetensorError

from robustbench_cnn.cli.options import default_out, folder, zoo_dir_of
from robustbench_cnn.cli.reports import compare_runs
from robustbench_cnn.config.load import LoadedSuite, load_suite
from robustbench_cnn.config.paths import run_root
from robustbench_cnn.config.spec import NEEDS_PREPROCESS
from robustbench_cnn.engine import crashes
from robustbench_cnn.engine.planning import DEFAULT_MAX_WORK, make_plan, render
from robustbench_cnn.engine.runner import RunOptions, newest_run, run_suite
from robustbench_cnn.errors import InputError, SuiteError, one_line
from robustbench_cnn.models.checkpoint import UnusableCheckpoint, read_state, resolve_format
from robustbench_cnn.report.history import append
from robustbench_cnn.report.plots import write_report
from robustbench_cnn.report.summary import compact, finish_run


def plan_text(args: argparse.Namespace, loaded: LoadedSuite, out: Path) -> tuple[str, str]:
    """The plan's text, and the one-line refusal when its work exceeds ``--max-work`` (else "")."""
    cache = folder(args.cache_dir or out / "cache", "--cache-dir")
    plan = make_plan(loaded, cache, args.seed, args.data_dir.resolve() if args.data_dir else None)
    max_work = DEFAULT_MAX_WORK if args.max_work is None else args.max_work
    if plan.total_work <= max_work:
        return render(plan, max_work), ""
    refusal = (f"{loaded.path}: about {plan.total_work:.3g} image-passes of work exceeds --max-work {max_work:.3g}; "
               "shrink the suite (see `robustbench-cnn plan`) or raise --max-work")  # fmt: skip
    return render(plan, max_work), refusal


def cmd_plan(args: argparse.Namespace) -> int:
    loaded = load_suite(args.suite, zoo_dir_of(args))
    text, _ = plan_text(args, loaded, folder(args.out or default_out(), "--out"))
    sys.stdout.write(text)
    return 0


def check_checkpoints(loaded: LoadedSuite) -> None:
    """Read every user checkpoint of the suite: a missing, corrupt, pickled or non-finite one is one line
    and exit 2 before anything is written (whether it fits its model is checked when the run builds it)."""
    import zipfile

    import torch

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


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_suite(args.suite, zoo_dir_of(args))
    out = folder(args.out or default_out(), "--out")
    text, refusal = plan_text(args, loaded, out)
    if args.dry_run:
        sys.stdout.write(text)
        return 0
    if refusal:
        raise SuiteError(refusal)
    run_root(out, loaded.spec.name)  # refuses a results folder that would resolve outside --out
    check_checkpoints(loaded)  # before a run directory exists

    resume = None
    if os.environ.get(crashes.RESUME_ENV):  # a supervised child resumed after a native crash
        args.resume = os.environ[crashes.RESUME_ENV]
    if args.resume is not None:
        resume = newest_run(out, loaded.spec.name) if args.resume == "newest" else Path(args.resume).resolve()
        if not resume.is_dir():
            raise InputError(f"--resume {resume}: no such run folder; nothing to resume (omit --resume to start a "
                             "new run)")  # fmt: skip
    opts = RunOptions(
        out_root=out,
        cache_dir=folder(args.cache_dir or out / "cache", "--cache-dir"),
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
        report = write_report(result.run_dir)
        append(out / "history.sqlite", result.table, result.manifest["started"])
        sys.stdout.write(f"\nreport: {report} and {report.with_suffix('.html')}\n")
    sys.stdout.write(f"results: {result.run_dir}\n")
    if args.baseline is not None:
        code = compare_runs(args.baseline, result.run_dir, args, out=result.run_dir / "compare.md")
        if code:
            return code
    failed = result.manifest.get("failed_cells", [])
    if failed:
        sys.stderr.write(f"robustbench-cnn: {len(failed)} cell(s) failed; see failed_cells in manifest.json\n")
        return 1
    return 0
