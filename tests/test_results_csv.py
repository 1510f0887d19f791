"""The results-CSV boundary: every contract breach is one line naming the file, line, column and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustbench_cnn.cli.main import main
from robustbench_cnn.contract.results import ResultsError, read_csv
from robustbench_cnn.contract.schema import COLUMNS

SEED = Path(__file__).resolve().parents[1] / "results" / "baselines" / "smoke.csv"
HEADER = ",".join(COLUMNS[:17])  # through batch_size: a table from before the ci_low/ci_high extension
ROW = "r,s,digits,m,simple_cnn,none,none,torch,torch,cpu,{metric},{attack},{norm},{eps},{value},{n},{bs}"


def row(metric="clean_acc", value="0.9", n="360", eps="", bs="", attack="", norm="") -> str:
    return ROW.format(metric=metric, value=value, n=n, eps=eps, bs=bs, attack=attack, norm=norm)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (row(value="1.5"), "line 2, column 'value': clean_acc = 1.5 is outside [0, 1]"),
        (row(value=""), "line 2, column 'value' is empty"),
        (row(metric="latency_ms_p50", value="-1", bs="1"), "latency_ms_p50 = -1 is negative"),
        (row(metric="latency_ms_p50", value="inf", bs="1"), "column 'value': 'inf' is not finite"),
        (row(value="nan"), "column 'value': 'nan' is not finite"),
        (row(n='"1,5"'), "column 'n': '1,5' is not an integer"),
        (row(n="2.5"), "column 'n': '2.5' is not an integer"),
        (row(n="-3"), "column 'n': '-3' is below 0"),
        (row(metric="robust_acc", eps="-0.1", attack="pgd", norm="linf"), "column 'eps': '-0.1' is below 0"),
        (row(metric="latency_ms_p50", value="1", bs="0"), "column 'batch_size': '0' is below 1"),
        (row(metric="robust_ac"), "unknown metric 'robust_ac'; did you mean 'robust_acc'?"),
        (row(value="high"), "column 'value': 'high' is not a number"),
        (row() + ",extra", "line 2 has 18 fields, the header 17"),
        (row() + "\n" + row(value="0.8"), "lines 2 and 3 measure the same row"),
        (row().replace(",torch,torch,", ",torch,,"), "line 2, column 'runtime' is empty"),
    ],
)
def test_contract_breaches_are_one_line(tmp_path, body, expected):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "\n" + body + "\n")
    with pytest.raises(ResultsError) as info:
        read_csv(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes((HEADER + "\n" + row()).encode() + b"\n" + row(metric="macro_f1").encode()[:-5] + b"\xff\xfe\n")
    with pytest.raises(ResultsError, match=r"line 3: invalid UTF-8 at byte \d+; re-save the file as UTF-8"):
        read_csv(path)


def test_empty_and_headerless_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ResultsError, match="empty file, not a results table"):
        read_csv(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(HEADER + "\n")
    assert read_csv(header_only).empty


def test_the_baselines_are_valid_and_typed():
    df = read_csv(SEED)
    assert len(df) == SEED.read_text().count("\n") - 1 > 300  # every row read, none dropped
    assert str(df.n.dtype) == "Int64" and str(df.batch_size.dtype) == "Int64"
    assert df.value.dtype == "float64" and df.eps.dtype == "float64"


def test_compare_exits_2_with_one_line_on_a_bad_new_table(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    lines = SEED.read_text().splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if ",clean_acc," in line)  # the first clean accuracy row
    cells = lines[i].split(",")
    at = cells.index("clean_acc") + 4  # metric, attack, norm, eps, value
    value = float(cells[at])
    cells[at] = repr(value + 1)
    lines[i] = ",".join(cells)
    bad.write_text("".join(lines))
    assert main(["compare", str(SEED), str(bad)]) == 2
    err = capsys.readouterr().err
    expected = f"bad.csv: line {i + 1}, column 'value': clean_acc = {value + 1:g} is outside [0, 1]"
    assert err.count("\n") == 1 and expected in err, err


def test_every_metric_is_one_record_with_consistent_facts():
    """The contract's metric records: an interval only on an accuracy in [0, 1]; every check a 0/1 fraction
    gated as a check; the gate's accuracy metrics carry intervals; a name cannot be registered twice."""
    from robustbench_cnn.contract.schema import METRIC_SPECS, METRICS, gated, register_metric

    assert set(METRIC_SPECS) == METRICS and all(s.name == m for m, s in METRIC_SPECS.items())
    for spec in METRIC_SPECS.values():
        if spec.interval:
            assert (spec.low, spec.high, spec.higher_is_better) == (0.0, 1.0, True)
        assert (spec.gate == "check") == spec.name.startswith("check_")
        assert spec.description
    assert gated("accuracy") == {"clean_acc", "robust_acc", "certified_acc", "corruption_acc"}
    assert all(METRIC_SPECS[m].interval for m in gated("accuracy"))
    with pytest.raises(ValueError, match="already registered"):
        register_metric("clean_acc", "a second meaning")
