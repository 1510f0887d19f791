"""Sessions: ``tests`` (pytest), ``fuzz`` (property-based fuzzing, 10,000 examples), ``faults`` (every
fault-injection point, nightly), ``bench`` (run a
suite, smoke by default), ``lint`` (ruff), ``perf`` (benchmarks), ``edge`` (bundle a smoke-edge run,
validate it in a torch-free venv), ``edge_arm64``, ``gpu`` (the smoke suite on CUDA against the CPU
baseline; needs a GPU).

Every install goes through ``constraints.txt`` so nightly runs are reproducible.
"""

import shutil
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
    install(session, "test", "edge", "executorch")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """Property-based fuzzing (``pytest -m fuzz``) at >= 10,000 examples per property (nightly)."""
    install(session, "test", "edge")  # the bundle fuzz runs the LiteRT interpreter
    session.run("pytest", "-m", "fuzz", "--hypothesis-show-statistics", *session.posargs,
                env={"ROBUSTBENCH_FUZZ": "1"})  # fmt: skip


@nox.session(python=PYTHON)
def tests_ray(session: nox.Session) -> None:
    """``--executor ray`` on a local 2-CPU Ray cluster bound to 127.0.0.1 (nightly; a few minutes)."""
    install(session, "test", "ray")
    session.run("pytest", "tests/test_ray.py", "-v", *session.posargs, env={"ROBUSTBENCH_RAY": "1"})


@nox.session(python=PYTHON)
def faults(session: nox.Session) -> None:
    """Fault injection (nightly): SIGKILL/SIGINT at every named point of a run (training, cache writes,
    ONNX/int8/TFLite exports, cells, manifest) then ``--resume``; concurrent runs; read-only and full disks."""
    install(session, "test", "edge")  # the TFLite kill point exports with LiteRT-Torch
    tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_faults*.py"))
    session.run("pytest", *tests, *session.posargs, env={"ROBUSTBENCH_FAULTS": "1"})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run a suite: ``nox -s bench`` (suites/smoke.toml) or ``nox -s bench -- SUITE [options]``."""
    install(session, "edge", "executorch")
    args = list(session.posargs)
    if not args or args[0].startswith("-"):
        args.insert(0, str(ROOT / "suites" / "smoke.toml"))
    session.run("robustbench-cnn", "run", *args)


@nox.session(python=PYTHON)
def perf(session: nox.Session) -> None:
    """Benchmarks with ratios vs plain baselines: ``nox -s perf`` (``-- --quick``: no compile/bf16, no smoke run)."""
    install(session)
    session.run("python", str(ROOT / "benchmarks" / "perf.py"), *session.posargs)


@nox.session(python=PYTHON)
def gpu(session: nox.Session) -> None:
    """On a CUDA machine: run the smoke suite on the GPU and compare it with the CPU baseline
    (``nox -s gpu -- [tools/gpu_check.py options]``, e.g. ``--cold``, ``--cpu-run``); where nox cannot
    install, ``PYTHONPATH=. python tools/gpu_check.py`` does the same with the machine's torch."""
    install(session)
    session.run("python", str(ROOT / "tools" / "gpu_check.py"), *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and mypy on the whole package (pyproject [tool.mypy])."""
    install(session, "test")  # mypy follows imports into torch, pydantic, ...
    session.install("-c", CONSTRAINTS, "ruff", "mypy")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


def _edge_bundle(session: nox.Session) -> Path:
    """Bundle ``RUN_DIR`` (the first positional argument) or the newest smoke-edge run, running the
    suite first if there is none (trained models come from the shared model cache)."""
    install(session, "edge")
    results = Path(session.env.get("ROBUSTBENCH_CNN_RESULTS", ROOT / "results"))
    run_dir = Path(session.posargs[0]) if session.posargs else results / "smoke-edge" / "latest"
    if not session.posargs and not (run_dir / "results.csv").is_file():
        session.run("robustbench-cnn", "run", str(ROOT / "suites" / "smoke-edge.toml"), "--out", str(results),
                    "--no-progress")  # fmt: skip
    run_dir = run_dir.resolve()
    bundle = ROOT / ".nox" / "edge-bundle"
    session.run("robustbench-cnn", "edge", "bundle", str(run_dir), "--out", str(bundle), "--force")
    return bundle


@nox.session(python=PYTHON)
def edge(session: nox.Session) -> None:
    """Bundle a smoke-edge run (``nox -s edge -- [RUN_DIR]``), then validate it in a second venv that
    has only numpy and ai-edge-litert (what a Raspberry Pi needs), and check that a tampered copy fails."""
    bundle = _edge_bundle(session)
    pi = ROOT / ".nox" / "edge-pi"
    if not (pi / "bin" / "python").is_file():
        session.run("python", "-m", "venv", str(pi))
    pip = [str(pi / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", CONSTRAINTS, "numpy", "ai-edge-litert"]
    session.run(*pip, external=True)
    python = str(pi / "bin" / "python")
    session.run(
        python, "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)", external=True
    )  # fmt: skip  (fails if torch is importable there)
    with session.chdir(bundle):  # the bundle's own copy of the validator
        session.run(python, "-m", "robustbench_cnn.edge", "validate", ".", external=True)
    # the fallback runtime for older OS images: tflite-runtime 2.14 needs numpy < 2 (its own venv)
    legacy = ROOT / ".nox" / "edge-tflite-runtime"
    if not (legacy / "bin" / "python").is_file():
        session.run("python", "-m", "venv", str(legacy))
    session.run(str(legacy / "bin" / "python"), "-m", "pip", "install", "--quiet", "tflite-runtime==2.14.0",
                "numpy==1.26.4", external=True)  # fmt: skip
    with session.chdir(bundle):  # reported, not gating: tflite-runtime 2.14's int8 kernels are older than the
        # reference's (ai-edge-litert): MobileNetV2 int8 missed one robust accuracy by 1.1 pt (> 1 pt) there
        session.run(str(legacy / "bin" / "python"), "-m", "robustbench_cnn.edge", "validate", ".", "--no-latency",
                    "--out", "validation/tflite_runtime.csv", external=True, success_codes=[0, 1])  # fmt: skip
    tampered = ROOT / ".nox" / "edge-bundle-tampered"
    shutil.rmtree(tampered, ignore_errors=True)
    shutil.copytree(bundle, tampered)
    model = sorted((tampered / "models").glob("*.tflite"))[0]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    model.write_bytes(bytes(data))
    with session.chdir(tampered):
        session.run(python, "-m", "robustbench_cnn.edge", "validate", ".", "--no-latency", external=True,
                    success_codes=[2])  # fmt: skip
    session.log(f"edge venv: {_du(pi) / 1e6:.0f} MB (numpy + ai-edge-litert); tampered bundle rejected")


def _arm64_bundle(session: nox.Session) -> Path:
    """``nox -s edge_arm64 -- BUNDLE_DIR`` (a folder with manifest.json) validates that bundle as it is; else
    ``_edge_bundle`` bundles ``RUN_DIR`` or the newest smoke-edge run."""
    if session.posargs and (Path(session.posargs[0]) / "manifest.json").is_file():
        return Path(session.posargs[0]).resolve()
    return _edge_bundle(session)


@nox.session(python=PYTHON)
def edge_arm64(session: nox.Session) -> None:
    """Validate an edge bundle on arm64 under qemu user-mode emulation (Debian's qemu-user-static +
    debootstrap) for every OS x runtime x core: Debian bookworm (Python 3.11) and trixie (Python 3.13),
    ai-edge-litert and tflite-runtime 2.14 (reported, not gating; a skip line where pip has no wheel) and,
    for a bundle's ``.pte`` programs, executorch + torch in a site of their own (~4.5 GB), a
    Raspberry Pi 4 (Cortex-A72) and Pi 5 (Cortex-A76) core; ends with one table
    (``nox -s edge_arm64 -- [RUN_DIR | BUNDLE_DIR]``). Skipped with a message where emulation is unavailable.
    Emulated latency is not a device figure, so it is not measured."""
    bundle = _arm64_bundle(session)
    tool = str(ROOT / "tools" / "edge_arm64_matrix.py")  # writes validation/arm64-<os>-<runtime>-<board>.csv
    session.run("python", tool, str(bundle), "--allow-skip", "--cache-dir", str(ROOT / ".nox" / "arm64"))


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
