"""Validate an edge bundle on arm64 under qemu for every OS x model runtime x emulated Raspberry Pi core.

Each combination (``tools/edge_arm64.py``: one cached Debian root per OS, one site per runtime holding only that
runtime) runs the bundle's own validator with ``--no-latency`` and writes
``BUNDLE/validation/arm64-<os>-<runtime>-<board>.csv`` (and its ``.json``). The last output is one table: os,
python, runtime and version, core, result, models run and skipped (rows checked), wall time. The TFLite sites
run a bundle's ``.tflite`` models and skip its ``.pte`` ones; the executorch site (torch inside) the reverse. A
combination passes when every model it ran matched. A runtime pip has no wheel for on an OS's Python is a
``skip`` line; tflite-runtime 2.14's misses are reported, not gating (as in ``nox -s edge``); any other failure
exits 1, a validator killed by a signal (e.g. SIGILL: an instruction the emulated core lacks) included: the
row names the signal and the core, since a Pi with that core would crash the same way.

Usage: python tools/edge_arm64_matrix.py BUNDLE [--cache-dir DIR] [--os OS...] [--runtime RT...] [--cpu CPU...]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
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
    ran: int | None = None  # models validated (distinct model, compression, format in the CSV)
    skipped: int | None = None  # models the validator skipped: their runtime is not in this site

    @property
    def models(self) -> str:
        """The models cell: ``N run, M skipped (R rows)``, or ``-`` where the validator wrote nothing."""
        if self.rows is None:
            return "-"
        return f"{self.ran} run, {self.skipped or 0} skipped ({self.rows} rows)"


def _exit(returncode: int) -> str:
    """``exit N``, or the signal that killed the process (qemu-user dies of the guest's fatal signal)."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name} (signal {-returncode})"
    except ValueError:
        return f"killed by signal {-returncode}"


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
    return f"FAIL: {_exit(proc.returncode)}: {tail}", True


def _count(csv_path: Path) -> tuple[int | None, int | None]:
    """Rows in the validator's CSV and the models they cover, or (None, None) where it wrote none."""
    if not csv_path.is_file():
        return None, None
    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return len(rows), len({(r.get("model"), r.get("compression"), r.get("format")) for r in rows})


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
    rows, ran = _count(bundle / out)
    result, gates = _verdict(proc, report, rt)
    versions = dict(zip(str(env.get("runtime")).split("+"), str(env.get("runtime_version")).split("+"), strict=False))
    version = f"{runtime} {versions[rt.module]}" if rt.module in versions else runtime
    if proc.returncode < 0:
        log.error("%s on %s, %s: %s", runtime, os_name, cpu, result)
    skipped = len(env.get("skipped") or {}) if report else None
    python = env.get("python", arm.OSES[os_name].python)
    return Outcome(os_name, python, version, cpu, result, rows, wall, gates, ran, skipped)


def _suffixes(bundle: Path) -> set[str] | None:
    """The suffixes of the bundle's model files (``.tflite``, ``.pte``, ...), or None where its manifest is
    unreadable (the validator then says why)."""
    try:
        models = json.loads((bundle / "manifest.json").read_text())["models"]
        return {Path(m["file"]).suffix for m in models}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_matrix(bundle: Path, cache_dir: Path, oses: Sequence[str], runtimes: Sequence[str],
               cpus: Sequence[str]) -> list[Outcome]:  # fmt: skip
    """Validate ``bundle`` for every (OS, runtime, core): a runtime pip has no wheel for, or none of whose
    models the bundle holds (no site is built: the executorch one carries torch), is a skip per core, a root or
    site that cannot be built a (gating) FAIL per core."""
    bundle = Path(bundle).resolve()
    suffixes = _suffixes(bundle)
    outcomes = []
    for os_name in oses:
        python = arm.OSES[os_name].python
        for runtime in runtimes:
            if suffixes is not None and arm.RUNTIMES[runtime].suffix not in suffixes:
                why = f"skip: the bundle has no {arm.RUNTIMES[runtime].suffix} model"
                outcomes += [Outcome(os_name, python, runtime, cpu, why) for cpu in cpus]
                continue
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
    """Return the outcomes as a Markdown table (os, python, runtime, cpu, result, models (rows), wall)."""
    lines = ["| os | python | runtime | cpu | result | models (rows) | wall |", "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        wall = f"{o.wall_s:.0f} s" if o.wall_s else "-"
        cells = [o.os, o.python, o.runtime, o.cpu, o.result.replace("|", "/"), o.models, wall]
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
