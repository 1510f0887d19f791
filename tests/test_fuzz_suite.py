"""Property-based fuzzing of suite files: mutate the shipped suites (types, values, names, nesting,
unicode, raw text) and check the only promise a suite file gets: it loads, or it is refused with one
line per problem (``file: field: problem``), exit code 2 through the CLI, and never a traceback.

~200 examples by default; ``ROBUSTBENCH_FUZZ=1`` (``nox -s fuzz``) runs 10,000. Counts of accepted
suites and clean errors show with ``--hypothesis-show-statistics``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from robustbench_cnn.cli.main import main
from robustbench_cnn.config.load import load_suite
from robustbench_cnn.config.spec import (
    CertifySpec,
    ChecksSpec,
    DatasetSpec,
    EvalSpec,
    ExportSpec,
    LatencySpec,
    ModelSpec,
    PerformanceSpec,
    SuiteSpec,
    TrainSpec,
)
from robustbench_cnn.errors import SuiteError

PROFILES = {"fast": 200, "fuzz": 10_000}  # examples per test; ROBUSTBENCH_FUZZ=1 selects "fuzz"
PROFILE = "fuzz" if os.environ.get("ROBUSTBENCH_FUZZ") == "1" else "fast"
FUZZ = settings(
    max_examples=PROFILES[PROFILE],
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
SEEDS = [tomllib.loads(p.read_text()) for p in sorted((Path(__file__).parents[1] / "suites").glob("*.toml"))]
FIELDS = sorted({f for spec in (SuiteSpec, DatasetSpec, TrainSpec, ModelSpec, EvalSpec, LatencySpec, CertifySpec,
                                ChecksSpec, PerformanceSpec, ExportSpec) for f in spec.model_fields}
                | {"eps", "steps", "sigma", "source", "ratio", "teacher", "width", "depth"})  # fmt: skip
ODD_STRINGS = ["8/255", "1e400", "-1e400", "1/0", "../x", "a/../../b", "a\nb", "a\rb", "\x00", "\u2028", "\ufeff",
               "x" * 300, "", " ", "nan", "inf", "1e3", "true", "simple_cnn", "pgd", "pgd_at", "prune", "digits",
               "SMOKE", "Simple-CNN", "simple.cnn", "torchvision:resnet18", "timm:resnet18", "pkg.mod:factory",
               "ü", "名前", "\U0001f600", "con", "/etc/passwd", "~"]  # fmt: skip

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 10**18]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(ODD_STRINGS),
    st.dates(min_value=date(1, 1, 1)),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))


def toml(value: Any) -> str:
    """Inline TOML for a parsed value (tables inline, arrays of tables as arrays of inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int | date):
        return str(value) if isinstance(value, int) else value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml(v)}" for k, v in value.items()) + " }"


def document(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k, ensure_ascii=False)} = {toml(v)}\n" for k, v in data.items())


def _containers(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every table and array in ``value`` (the root included)."""
    out = [path] if isinstance(value, dict | list) else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        out += _containers(v, (*path, k))
    return out


def _at(root: Any, path: tuple) -> Any:
    for part in path:
        root = root[part]
    return root


@st.composite
def mutated_suites(draw: st.DrawFn) -> str:
    data = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        target = _at(data, draw(st.sampled_from(_containers(data))))
        slots = list(target) if isinstance(target, dict) else list(range(len(target)))
        op = draw(st.sampled_from(["replace", "delete", "insert", "nest", "rename", "twin"]))
        slot = draw(st.sampled_from(slots)) if slots else None
        if op == "replace" and slot is not None:
            target[slot] = draw(values)
        elif op == "delete" and slot is not None:
            del target[slot]
        elif op == "insert":
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
            else:
                target.append(draw(values))
        elif op == "nest" and slot is not None:
            for _ in range(draw(st.integers(1, 60))):
                target[slot] = [target[slot]] if draw(st.booleans()) else {"k": target[slot]}
        elif op == "rename" and slot is not None and isinstance(target, dict):
            target[draw(st.sampled_from(ODD_STRINGS) | st.text(max_size=10))] = target.pop(slot)
        elif op == "twin" and isinstance(target, list) and target:  # e.g. two models differing in case only
            twin = copy.deepcopy(draw(st.sampled_from(target)))
            if isinstance(twin, dict) and isinstance(twin.get("name"), str):
                twin["name"] = draw(st.sampled_from([twin["name"].upper(), twin["name"].replace("_", "-"), "x"]))
            target.append(twin)
    text = document(data)
    edit = draw(st.sampled_from(["none", "none", "insert", "cut", "deep"]))
    at = draw(st.integers(0, len(text)))
    if edit == "insert":
        text = text[:at] + draw(st.sampled_from(ODD_STRINGS) | st.text(max_size=10)) + text[at:]
    elif edit == "cut":
        text = text[:at]
    elif edit == "deep":
        depth = draw(st.integers(30, 3000))
        text += f"deep = {'[' * depth}{']' * depth}\n"
    return text


def _check_error(path: Path, exc: SuiteError) -> None:
    assert exc.problems, "a SuiteError lists at least one problem"
    for line in exc.problems:
        assert len(line.splitlines()) == 1 and "\n" not in line and "\r" not in line, line
        assert line.startswith(f"{path}: "), line


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.fuzz
@FUZZ
@given(text=mutated_suites())
def test_mutated_suites_load_or_fail_with_one_line_per_problem(folder: Path, text: str) -> None:
    path = folder / "suite.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_suite(path)
        event("accepted")
    except SuiteError as exc:
        event("clean error")
        _check_error(path, exc)


@pytest.mark.fuzz
@FUZZ
@given(text=mutated_suites())
def test_the_cli_exits_2_with_one_line_per_problem(folder: Path, text: str) -> None:
    path = folder / "cli.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_suite(path)
        event("accepted (not run)")
        return
    except SuiteError as exc:
        problems = exc.problems
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["plan", str(path)])
    assert code == 2
    assert err.getvalue().splitlines() == [f"robustbench-cnn: error: {p}" for p in problems]
    event("exit 2")
