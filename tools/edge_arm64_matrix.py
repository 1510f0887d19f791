"""Validate an edge bundle on arm64 under qemu for every OS x TFLite runtime x emulated Raspberry Pi core.

Each combination (``tools/edge_arm64.py``: one cached Debian root per OS, one site per runtime holding only that
runtime) runs the bundle's own validator with ``--no-latency`` and writes
``BUNDLE/validation/arm64-<os>-<runtime>-<board>.csv`` (and its ``.json``). The last output is one table: os,
python, runtime and version, core, result, rows checked, wall time. A runtime pip has no wheel for on an OS's
Python is a ``skip`` line; tflite-runtime 2.14's misses are reported, not gating (as in ``nox -s edge``); any
other failure exits 1.

Usage: python tools/edge_arm64_matrix.py BUNDLE [--cache-dir DIR] [--os OS...] [--runtime RT...] [--cpu CPU...]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edge_arm64 as arm  # noqa: E402

log = logging.getLogger("edge_arm64")


@dataclass
class Outcome:
    """One matrix cell: what ran, its result (pass / FAIL: why / skip: why), rows checked and wall time."""

    os: str
    python: str
    runtime: str
    cpu: str
    result: str
    rows: int | None = None
    wall_s: float = 0.0
    gates: bool = False  # a failure that fails the matrix


def _verdict(proc: subprocess.CompletedProcess, report: dict, rt: arm.RuntimeSpec) -> tuple[str, bool]:
    """Return the result text and whether it fails the matrix, from the validator's exit and results.json."""
    used = str(report.get("environment", {}).get("runtime"))  # "+"-joined when the bundle has other formats
    if proc.returncode in (0, 1) and rt.module not in used.split("+"):
        return f"FAIL: the validator used {used}, not {rt.module}", True
    skipped = report.get("environment", {}).get("skipped") or {}
    note = f" ({rt.note})" if rt.note else ""
    note += f"; {len(skipped)} model(s) skipped: {'; '.join(sorted(set(skipped.values())))}" if skipped else ""
    if proc.returncode == 0:
        return f"pass{note}", False
    if proc.returncode == 1:
        failures = [f"{m}: {f}" for m, fs in report.get("failures", {}).items() for f in fs]
        first = failures[0] if failures else "no model validated"
        return f"FAIL: {len(report.get('failures', {}))} model(s) missed, e.g. {first}{note}", rt.gating
    tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
    return f"FAIL: exit {proc.returncode}: {tail}", True


def validate_one(bundle: Path, root: Path, site: Path, os_name: str, runtime: str, cpu: str) -> Outcome:
    """Validate ``bundle`` (its own copy of the validator) with one (OS, runtime, core); no latency."""
    rt = arm.RUNTIMES[runtime]
    out = Path("validation") / f"arm64-{os_name}-{runtime}-{arm.CPUS.get(cpu, cpu)}.csv"
    for stale in (bundle / out, bundle / out.with_suffix(".json")):
        stale.unlink(missing_ok=True)
    args = ["-m", "robustbench_cnn.edge", "validate", ".", "--no-latency", "--out", str(out)]
    start = time.monotonic()
    proc = arm.run_python(root, site, args, cpu=cpu, cwd=bundle, capture_output=True, text=True)
    wall = time.monotonic() - start
    for line in (proc.stderr + proc.stdout).splitlines():  # the validator logs to stderr, prints its lines last
        log.info("  %s", line)
    report_path = bundle / out.with_suffix(".json")
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    env = report.get("environment", {})
    rows = None
    if (bundle / out).is_file():
        with (bundle / out).open(newline="") as fh:
            rows = sum(1 for _ in csv.DictReader(fh))
    result, gates = _verdict(proc, report, rt)
    versions = dict(zip(str(env.get("runtime")).split("+"), str(env.get("runtime_version")).split("+"), strict=False))
    module = arm.RUNTIMES[runtime].module
    version = f"{runtime} {versions[module]}" if module in versions else runtime
    return Outcome(os_name, env.get("python", arm.OSES[os_name].python), version, cpu, result, rows, wall, gates)


def run_matrix(bundle: Path, cache_dir: Path, oses: Sequence[str], runtimes: Sequence[str],
               cpus: Sequence[str]) -> list[Outcome]:  # fmt: skip
    """Validate ``bundle`` for every (OS, runtime, core): a runtime pip has no wheel for is a skip per core, a
    root or site that cannot be built a (gating) FAIL per core."""
    bundle = Path(bundle).resolve()
    outcomes = []
    for os_name in oses:
        python = arm.OSES[os_name].python
        for runtime in runtimes:
            try:
                root = arm.prepare_root(cache_dir, os_name)
                site = arm.prepare_site(root, os_name, runtime)
            except arm.NoWheel as err:
                log.info("skip %s on %s: %s", runtime, os_name, err)
                outcomes += [Outcome(os_name, python, runtime, cpu, f"skip: {err}") for cpu in cpus]
                continue
            except RuntimeError as err:
                log.error("%s on %s: %s", runtime, os_name, err)
                outcomes += [Outcome(os_name, python, runtime, cpu, f"FAIL: {err}", gates=True) for cpu in cpus]
                continue
            for cpu in cpus:
                log.info("validating %s on %s, %s, %s", bundle, os_name, runtime, cpu)
                outcomes.append(validate_one(bundle, root, site, os_name, runtime, cpu))
    return outcomes


def format_table(outcomes: Sequence[Outcome]) -> str:
    """Return the outcomes as a Markdown table (os, python, runtime, cpu, result, rows, wall)."""
    lines = ["| os | python | runtime | cpu | result | rows | wall |", "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        rows = "-" if o.rows is None else str(o.rows)
        wall = f"{o.wall_s:.0f} s" if o.wall_s else "-"
        cells = [o.os, o.python, o.runtime, o.cpu, o.result.replace("|", "/"), rows, wall]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI: run the matrix on BUNDLE, print the table; exit 1 on a gating failure, 3 (0: --allow-skip) without qemu."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="an edge bundle (robustbench-cnn edge bundle)")
    parser.add_argument("--cache-dir", type=Path, default=arm.DEFAULT_CACHE, help=f"default {arm.DEFAULT_CACHE}")
    parser.add_argument("--allow-skip", action="store_true", help="exit 0 (not 3) when emulation is unavailable")
    parser.add_argument("--os", nargs="+", choices=list(arm.OSES), default=list(arm.OSES), help="default: all")
    parser.add_argument("--runtime", nargs="+", choices=list(arm.RUNTIMES), default=list(arm.RUNTIMES))
    parser.add_argument("--cpu", nargs="+", choices=list(arm.CPUS), default=list(arm.CPUS))
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO, format="%(name)s: %(message)s")
    reason = arm.available()
    if reason:
        sys.stdout.write(f"SKIP: {reason}\n")
        return 0 if ns.allow_skip else 3
    outcomes = run_matrix(ns.bundle, ns.cache_dir, ns.os, ns.runtime, ns.cpu)
    sys.stdout.write(format_table(outcomes))
    return 1 if any(o.gates for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
