"""history: fp32 and int8 rows told apart, a plot over the runs' dates with a legend, did-you-mean."""

from __future__ import annotations

import matplotlib.dates as mdates
import pytest

from robustbench_cnn.cli.main import main
from robustbench_cnn.contract.results import Row, frame
from robustbench_cnn.report.history import append, figure, query


def run_table(run_id: str, scale: float = 1.0):
    common = {"run_id": run_id, "suite": "s", "dataset": "digits", "model": "simple_cnn", "arch": "simple_cnn"}
    rows = [Row(**common, metric="clean_acc", value=0.99, n=360)]
    for compression, ms in (("none", 1.0), ("int8", 0.6)):
        for bs in (1, 64):
            rows.append(Row(**common, metric="latency_ms_p50", value=ms * bs * scale, n=50, batch_size=bs,
                            format="onnx", runtime="onnxruntime", compression=compression))  # fmt: skip
    return frame(rows)


@pytest.fixture
def results(tmp_path):
    append(tmp_path / "history.sqlite", run_table("r1"), "2026-11-20T02:00:00+00:00")
    return tmp_path


def test_fp32_and_int8_rows_are_distinguishable(results, capsys):
    assert main(["history", "--metric", "latency_ms_p50", "--results", str(results)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "simple_cnn" in ln]
    assert len(lines) == 4 and len(set(lines)) == 4
    assert sum("int8" in ln for ln in lines) == 2 and all("onnxruntime" in ln for ln in lines)


def test_plot_after_one_run_spans_about_a_day_with_a_legend(results):
    df = query(results / "history.sqlite", "latency_ms_p50")
    fig = figure(df, "latency_ms_p50")
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert 0.9 <= hi - lo <= 1.1  # days: one run, padded 12 h each side (was 2025-2029)
    assert mdates.num2date(lo).year == mdates.num2date(hi).year == 2026
    labels = sorted(t.get_text() for t in ax.get_legend().get_texts())
    assert labels == ["simple_cnn onnx/onnxruntime bs 1", "simple_cnn onnx/onnxruntime bs 64",
                      "simple_cnn onnx/onnxruntime int8 bs 1", "simple_cnn onnx/onnxruntime int8 bs 64"]  # fmt: skip


def test_plot_over_several_runs_spans_their_dates(results, tmp_path):
    db = results / "history.sqlite"
    append(db, run_table("r2", 1.1), "2026-11-21T02:00:00+00:00")
    append(db, run_table("r3", 0.9), "2026-11-22T02:00:00+00:00")
    assert main(["history", "--metric", "latency_ms_p50", "--results", str(results), "--plot",
                 str(tmp_path / "h.png")]) == 0  # fmt: skip
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    lo, hi = figure(query(db, "latency_ms_p50"), "latency_ms_p50").axes[0].get_xlim()
    assert 2.0 < hi - lo <= 3.1


@pytest.mark.parametrize(
    ("args", "hint"),
    [(["--metric", "robust_ac"], "did you mean 'robust_acc'?"),
     (["--metric", "latency_p50"], "did you mean 'latency_ms_p50'?"),
     (["--metric", "clean_acc", "--model", "simple_cn"], "did you mean 'simple_cnn'?")],
)  # fmt: skip
def test_a_typo_suggests_the_closest_name(results, capsys, args, hint):
    assert main(["history", *args, "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert hint in err and err.count("\n") == 1
