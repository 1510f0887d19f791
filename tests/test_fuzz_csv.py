"""Property: ``compare`` on a mutated results CSV ends in success (exit 0/1) or in one clean line and
exit 2, never in another exception. The seed is the committed baseline ``results/baselines/smoke.csv``;
mutations: a cell replaced (by a nasty value or arbitrary text), lines deleted, duplicated or
swapped, bytes inserted (invalid UTF-8 included), flipped or deleted, the file truncated.

``ROBUSTBENCH_FUZZ=1`` selects the ``csv-fuzz-10k`` profile (10,000 examples); the default runs 200.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustbench_cnn.cli.main import main

SEED = Path(__file__).resolve().parents[1] / "results" / "baselines" / "smoke.csv"
NASTY = ["", " ", "nan", "NaN", "inf", "-inf", "-1", "1.5", "1,5", "1e309", "-0", "0x10", "1_000", "١", "None",
         "null", '"', '""', "'", "\x00", "\n", "\r", "a\nb", "😀", "\ufeff", "clean_acc ", "robust_ac",
         "latency_ms_p50", "check_grad_norm", "2", "0.5", "64", "999999999999999999999", "9e15", "1e-320",
         "linf", "l2", "pgd", "torch", "onnx", "int8", "-", "=1+1", "𝟙", "\x1e", "\u2028", "\x85"]  # fmt: skip

settings.register_profile(
    "csv-fuzz-default", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.register_profile(
    "csv-fuzz-10k", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE = "csv-fuzz-10k" if os.environ.get("ROBUSTBENCH_FUZZ") == "1" else "csv-fuzz-default"


@st.composite
def mutation(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["cell", "cell_text", "delete_line", "duplicate_line", "swap_lines", "insert_bytes",
                                 "flip_byte", "delete_bytes", "truncate"]))  # fmt: skip
    where = draw(st.floats(0, 1, allow_nan=False))
    if kind == "cell":
        return kind, where, draw(st.integers(0, 16)), draw(st.sampled_from(NASTY))
    if kind == "cell_text":
        return kind, where, draw(st.integers(0, 16)), draw(st.text(max_size=12))
    if kind in ("insert_bytes", "flip_byte"):
        return kind, where, draw(st.binary(min_size=1, max_size=6))
    if kind in ("swap_lines", "delete_bytes"):
        return kind, where, draw(st.floats(0, 1, allow_nan=False))
    return kind, where


def apply(data: bytes, m: tuple) -> bytes:
    kind, where = m[0], m[1]
    lines = data.split(b"\n")
    i = min(int(where * len(lines)), len(lines) - 1)
    pos = min(int(where * len(data)), len(data))
    if kind in ("cell", "cell_text"):
        cells = lines[i].split(b",")
        cells[m[2] % len(cells)] = m[3].encode("utf-8", "surrogatepass")
        lines[i] = b",".join(cells)
    elif kind == "delete_line":
        del lines[i]
    elif kind == "duplicate_line":
        lines.insert(i, lines[i])
    elif kind == "swap_lines":
        j = min(int(m[2] * len(lines)), len(lines) - 1)
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "insert_bytes":
        return data[:pos] + m[2] + data[pos:]
    elif kind == "flip_byte":
        return data[:pos] + bytes([m[2][0]]) + data[pos + 1 :]
    elif kind == "delete_bytes":
        return data[:pos] + data[pos + 1 + int(m[2] * 20) :]
    elif kind == "truncate":
        return data[:pos]
    return b"\n".join(lines)


COUNTS = {"exit 0": 0, "exit 1": 0, "exit 2": 0}  # over the examples run (the 10,000 run reports them)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-csv")


@pytest.mark.fuzz
@pytest.mark.slow  # 200 examples: 7 s on an idle 2-core machine, 27 s under load
@settings(settings.get_profile(PROFILE))
@given(mutations=st.lists(mutation(), min_size=1, max_size=3), mutated_is_new=st.booleans(),
       allow_removed=st.booleans())  # fmt: skip
def test_compare_on_a_mutated_csv_is_success_or_one_clean_line(work, mutations, mutated_is_new, allow_removed):
    data = SEED.read_bytes()
    for m in mutations:
        data = apply(data, m)
    mutated = work / "mutated.csv"
    mutated.write_bytes(data)
    base, new = (SEED, mutated) if mutated_is_new else (mutated, SEED)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["compare", str(base), str(new), *(["--allow-removed"] if allow_removed else [])])
    COUNTS[f"exit {code}"] += 1
    assert code in (0, 1, 2)
    if code == 2:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("robustbench-cnn: error: "), err.getvalue()
        assert "mutated.csv" in lines[0] or "smoke.csv" in lines[0]


def test_the_seed_itself_is_accepted():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["compare", str(SEED), str(SEED)]) == 0
    assert "**0 regression(s)**" in out.getvalue()
