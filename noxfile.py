"""Sessions: ``tests`` (pytest), ``bench`` (run a suite, smoke by default), ``lint`` (ruff).

Every install goes through ``constraints.txt`` so nightly runs are reproducible.
"""

from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = str(ROOT / "constraints.txt")
PYTHON = "3.11"

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"  # torch is ~5 GB; pip still re-resolves against the constraints
nox.options.sessions = ["lint", "tests"]


def install(session: nox.Session, *extras: str) -> None:
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("-c", CONSTRAINTS, "-e", target)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and invariant tests (no network; a few minutes on 2 cores)."""
    install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run a suite: ``nox -s bench`` (suites/smoke.toml) or ``nox -s bench -- SUITE [options]``."""
    install(session)
    args = list(session.posargs)
    if not args or args[0].startswith("-"):
        args.insert(0, str(ROOT / "suites" / "smoke.toml"))
    session.run("robustbench-cnn", "run", *args)


@nox.session(python=PYTHON)
def perf(session: nox.Session) -> None:
    """Benchmarks with ratios vs plain baselines: ``nox -s perf`` (``-- --quick`` skips the smoke run)."""
    install(session)
    session.run("python", str(ROOT / "benchmarks" / "perf.py"), *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("-c", CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
