"""Provenance: what ran, on what, from which code, and how long each stage took."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict

from robustbench_cnn.atomic import atomic_write_bytes
from robustbench_cnn.contract.integrity import unique_keys
from robustbench_cnn.errors import InputError, one_line

MANIFEST_FORMAT = 2
"""Format of ``manifest.json``. 1: before typed cells (no cell index); a run of another format is
not resumed (start a new run)."""


class FailedCell(TypedDict, total=False):
    """A cell that raised, was skipped with its failed input, or killed the run's process."""

    model: str
    cell: str  # its label, e.g. attack(attack=pgd,norm=linf,eps=0.1)
    id: str
    status: str  # "error"
    error: str  # one line
    signal: str  # a native crash's signal (SIGSEGV), when it killed the process


class Headline(TypedDict):
    """A headline threat model and the rule that chose it."""

    norm: str
    eps: float
    rule: str


class Verdict(TypedDict):
    reliable: bool
    reasons: list[str]


class RunManifest(TypedDict, total=False):
    """A run's ``manifest.json``, as the engine writes it (format :data:`MANIFEST_FORMAT`); readers get
    it back from :func:`read_run_manifest`, every field they use checked. ``models`` maps a model to
    its entry: what preparing it recorded (cache key, source, zoo entry, training) and what its cells'
    ``meta`` merged in (checks, parity, skipped exports, ``cell_seconds``)."""

    format: int
    run_id: str
    suite: str
    suite_path: str
    suite_sha256: str
    started: str
    finished: str
    resumed: list[str]  # the times of each --resume
    status: Literal["running", "complete", "complete_with_errors", "interrupted", "failed"]
    error: str  # the exception that failed the run
    executor: str  # local | ray
    seed: int
    device: str
    environment: dict[str, Any]  # :func:`environment`
    dataset: dict[str, Any]  # name, train, eval, shape, fingerprint
    performance: dict[str, Any]  # the resolved [performance] settings and the certify runtime
    threat_models: list[Headline]
    models: dict[str, dict[str, Any]]
    failed_cells: list[FailedCell]
    cells: dict[str, int]  # computed, reused, failed
    stage_seconds: dict[str, float]
    wall_seconds: float
    verdicts: dict[str, Verdict]


KEY_PACKAGES = (
    "robustbench-cnn", "torch", "torchvision", "torchattacks", "numpy", "pandas", "scikit-learn",
    "scipy", "safetensors", "pydantic", "torch-pruning", "onnx", "onnxruntime", "ai-edge-litert",
)  # fmt: skip


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state(start: Path) -> dict[str, Any]:
    """The commit and dirty flag of the checkout the package runs from (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(start), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(dirty) if sha is not None and dirty is not None else None}


ISA_FLAGS = (("amx_tile", "AMX"), ("avx512_bf16", "AVX512_BF16"), ("avx512_vnni", "AVX512_VNNI"),
             ("avx512f", "AVX512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_1", "SSE4.1"))  # fmt: skip
MATH_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # fmt: skip


def cpu_isa() -> str | None:
    """The highest vector instruction set the CPU reports (``/proc/cpuinfo`` flags), e.g. ``AVX512_BF16``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    return next((name for flag, name in ISA_FLAGS if flag in flags), None)


def math_backends() -> dict[str, Any]:
    """What computes: torch's CPU kernel level and its oneDNN and MKL versions, numpy's BLAS, thread counts
    and the environment variables that steer them (trained weights depend on all of them)."""
    import re

    import torch

    config = torch.__config__.show()
    onednn = re.search(r"(?:MKL-DNN|oneDNN) (v[0-9.]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([0-9.]+)", config)
    blas = None
    try:
        from threadpoolctl import threadpool_info

        blas = next((f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info()
                     if i.get("user_api") == "blas"), None)  # fmt: skip
    except Exception:  # threadpoolctl is optional and inspects native libraries: never fail a run on it
        pass
    return {
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": onednn.group(1) if onednn else None,
        "mkl": mkl.group(1) if mkl else None,
        "numpy_blas": blas,
        "interop_threads": torch.get_num_interop_threads(),
        "env": {k: os.environ[k] for k in MATH_ENV if k in os.environ},
    }


def environment() -> dict[str, Any]:
    """A fingerprint of the software and hardware; latencies are comparable only between equal ones."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpu": gpu,
        "math": math_backends(),
        "packages": package_versions(),
        "git": git_state(Path(__file__).resolve().parent),
    }


def write_json(data: Mapping[str, Any], path: Path) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode())


@functools.cache
def _run_manifest_schema() -> Any:
    """The fields of a run's ``manifest.json`` that readers (compare, report, dashboard, bundle, resume,
    export) use, typed; anything else is kept as it is. Built on first use (pydantic is imported then)."""
    from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

    open_ = ConfigDict(extra="allow")
    Number = StrictInt | StrictFloat

    class Check(BaseModel):
        model_config = open_
        passed: StrictBool
        detail: StrictStr = ""

    class Model(BaseModel):
        model_config = open_
        zoo: StrictStr | None = None
        source: StrictStr | None = None
        cache: StrictStr | None = None
        key: StrictStr | None = None
        checks: dict[StrictStr, Check] = {}
        cell_seconds: dict[StrictStr, Number] = {}

    class Environment(BaseModel):
        model_config = open_
        cpu: StrictStr | None = None
        gpu: StrictStr | None = None
        torch_threads: StrictInt | None = None
        packages: dict[StrictStr, StrictStr | None] = {}

    class FailedCell(BaseModel):
        model_config = open_
        cell: StrictStr = ""
        error: StrictStr = ""
        signal: StrictStr | None = None

    class Headline(BaseModel):
        model_config = open_
        norm: Literal["linf", "l2"]
        eps: Number
        rule: StrictStr = ""

    class RunManifest(BaseModel):
        model_config = open_
        format: StrictInt | None = None
        run_id: StrictStr | None = None
        suite: StrictStr | None = None
        status: StrictStr | None = None
        started: StrictStr | None = None
        seed: StrictInt | None = None
        device: StrictStr | None = None
        wall_seconds: Number | None = None
        environment: Environment | None = None
        models: dict[StrictStr, Model] = {}
        failed_cells: list[FailedCell] = []
        stage_seconds: dict[StrictStr, Number] = {}
        dataset: dict[StrictStr, Any] = {}
        threat_models: list[Headline] = []

    return RunManifest


def read_run_manifest(path: Path) -> RunManifest:
    """A run's ``manifest.json``, with every field a reader uses checked for its JSON type (an object
    where an object is read, a string where a string is): the same dict back, or one
    :class:`~robustbench_cnn.errors.InputError` line naming the file, the field and the fix. Duplicate
    keys are refused."""
    from pydantic import ValidationError

    fix = "re-run (or --resume) the run to rewrite its manifest"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=unique_keys)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = one_line(str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__)
        raise InputError(f"{path}: unreadable manifest ({reason}); {fix}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a manifest is a JSON object, found {type(data).__name__}; {fix}")
    try:
        _run_manifest_schema().model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(one_line(str(p), 60) for p in err["loc"])
        raise InputError(f"{path}: {field}: {err['msg']}; {fix}") from None
    return data  # type: ignore[return-value]  # checked above: every field a reader uses has its type
