"""95% intervals of accuracy rows: shown in summary.md and report.html, and used by ``compare``.

``compare`` calls an accuracy drop a regression only beyond ``--acc-tol`` *and* when the new row's 95%
Clopper-Pearson interval lies wholly below the baseline's; tables without intervals keep the one-sided
Fisher exact test."""

from __future__ import annotations

import re

import pytest

from robustbench_cnn.cli.main import main
from robustbench_cnn.contract.results import Row, frame, read_csv, write_csv
from robustbench_cnn.metrics import clopper_pearson
from robustbench_cnn.report.html import render_html
from robustbench_cnn.report.summary import format_interval, render

COMMON = {"run_id": "r", "suite": "s", "dataset": "digits", "model": "m", "arch": "simple_cnn"}


def table(clean: float, robust: float, n: int) -> list[Row]:
    return [Row(**COMMON, metric="clean_acc", value=clean, n=n),
            Row(**COMMON, metric="robust_acc", value=robust, n=n, attack="worst_case", norm="linf", eps=0.1),
            Row(**COMMON, metric="macro_f1", value=0.9, n=n)]  # fmt: skip


def test_summary_and_report_show_the_interval_of_each_accuracy():
    df = frame(table(0.9, 150 / 360, 360))
    low, high = clopper_pearson(150 / 360, 360)
    assert format_interval(150 / 360, low, high) == "41.7 [36.5, 46.9]"
    text = render(df, {"suite": "s", "run_id": "r"})
    assert "41.7 [36.5, 46.9]" in text and "90.0 [86.4, 92.9]" in text
    assert re.search(r"\|\s+0\.9 \|", text)  # macro F1 carries no interval
    page = render_html(df, {"suite": "s", "run_id": "r"})
    row = re.search(r'<tr id="lb-m">.*?</tr>', page, re.S)
    assert row is not None
    cells = re.sub(r"<[^>]+>", "", row.group(0).replace("</td>", "|")).split("|")
    assert "41.7 [36.5, 46.9]" in cells and any(c.startswith("90.0 [") for c in cells)
    assert "95% Clopper-Pearson interval" in page
    assert "[0.3652, 0.4695]" in page  # the variant's detail table, as fractions


def test_a_table_without_intervals_shows_bare_values():
    df = frame(table(0.9, 0.5, 100)).drop(columns=["ci_low", "ci_high"])
    row = next(line for line in render(df, {}).splitlines() if line.startswith("| m "))
    assert re.search(r"\| +90(\.0)? \|", row) and re.search(r"\| +50(\.0)? \|", row) and "[" not in row


def compare_csvs(tmp_path, base: list[Row], new: list[Row], drop_intervals: bool = False) -> tuple[int, str]:
    paths = []
    for name, rows in (("base", base), ("new", new)):
        df = frame(rows)
        if drop_intervals:  # a table written before the ci_low/ci_high extension
            df = df.drop(columns=["ci_low", "ci_high"])
        write_csv(df, tmp_path / f"{name}.csv")
        paths.append(str(tmp_path / f"{name}.csv"))
    code = main(["compare", *paths])
    return code, paths[1]


@pytest.mark.parametrize(
    ("base", "new", "n", "regression"),
    [
        (0.5, 0.4, 40, False),  # -10 points at 40 images: [33.8, 66.2] -> [24.9, 56.7] overlap: noise
        (0.5, 0.1, 40, True),  # -40 points: [2.8, 23.7] lies below [33.8, 66.2]
        (0.6, 0.5, 200, False),  # Fisher's one-sided p = 0.028 < 0.05, but the 95% intervals overlap
        (0.9, 0.87, 10_000, True),  # -3 points at 10,000 images: real
        (0.9, 0.885, 10_000, False),  # -1.5 points: within the 2-point tolerance, whatever n says
    ],
)
def test_compare_judges_accuracy_drops_on_the_intervals(tmp_path, capsys, base, new, n, regression):
    code, _ = compare_csvs(tmp_path, table(0.95, base, n), table(0.95, new, n))
    out = capsys.readouterr().out
    assert code == (1 if regression else 0), out
    assert ("REGRESSION" in out) == regression
    if (base - new) * 100 > 2:
        lo_b, hi_b = clopper_pearson(base, n)
        assert f"(95%: [{lo_b * 100:.1f}, {hi_b * 100:.1f}] ->" in out  # the intervals behind the verdict
        assert "new 95% interval lies wholly below the baseline's" in out


@pytest.mark.parametrize(("base", "new", "n", "regression"), [(0.5, 0.4, 40, False), (0.5, 0.1, 40, True),
                                                             (0.6, 0.5, 200, True)])  # fmt: skip
def test_tables_without_intervals_keep_the_fisher_rule(tmp_path, capsys, base, new, n, regression):
    code, new_csv = compare_csvs(tmp_path, table(0.95, base, n), table(0.95, new, n), drop_intervals=True)
    assert "ci_low" not in read_csv(new_csv).columns
    out = capsys.readouterr().out
    assert code == (1 if regression else 0), out
    assert "(95%:" not in out


@pytest.mark.parametrize(
    ("low", "high", "why"),
    [("0.2", "", "not an interval"), ("0.5", "0.4", "not an interval"), ("1.5", "1.6", "outside [0, 1]"),
     ("x", "0.5", "is not a number"), ("0.6", "0.7", "0.5 is outside its interval")],
)  # fmt: skip
def test_a_malformed_interval_is_one_line_exit_2(tmp_path, capsys, low, high, why):
    df = frame(table(0.9, 0.5, 100)).astype({"ci_low": object, "ci_high": object})
    df.loc[1, ["ci_low", "ci_high"]] = [low, high]
    write_csv(df, tmp_path / "bad.csv")
    write_csv(frame(table(0.9, 0.5, 100)), tmp_path / "good.csv")
    assert main(["compare", str(tmp_path / "good.csv"), str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.csv: line 3" in err and why in err
