"""report.md with real PNG plots, the Pareto front, and the history store."""

import pandas as pd

from robustbench_cnn.cli import main
from robustbench_cnn.report.history import append, query
from robustbench_cnn.report.plots import pareto_front


def test_pareto_front():
    pts = pd.DataFrame({"cost": [1, 2, 3, 4, 2.5], "acc": [80, 90, 85, 95, 91]}, index=list("abcde"))
    assert list(pareto_front(pts, "cost", "acc").index) == ["a", "b", "e", "d"]


def test_robust_plot_draws_one_line_per_variant(tmp_path, monkeypatch):
    from robustbench_cnn.report import plots
    from robustbench_cnn.suite.results import Row, frame

    common = {"run_id": "r", "suite": "s", "dataset": "d", "model": "m", "arch": "a", "metric": "robust_acc",
              "attack": "pgd", "norm": "linf", "n": 10}  # fmt: skip
    rows = [Row(**common, eps=e, value=v, **kw) for kw in ({}, {"format": "onnx", "runtime": "onnxruntime"})
            for e, v in ((0.0, 0.9), (0.1, 0.5))]  # fmt: skip
    lines = []
    monkeypatch.setattr(plots, "_save", lambda fig, ax, path: lines.extend(ax.get_lines()) or path.name)
    plots.robust_vs_eps(frame(rows), tmp_path)
    assert sorted(line.get_label() for line in lines) == ["m", "m / onnx / onnxruntime"]
    assert all(len(line.get_xdata()) == 2 for line in lines)


def test_run_writes_report_plots_and_history(tmp_path, tiny_suite, capsys):
    suite = tiny_suite()
    out = tmp_path / "o"
    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 0
    run_dir = (out / "tiny" / "latest").resolve()
    report = (run_dir / "report.md").read_text()
    pngs = sorted(p.name for p in run_dir.glob("*.png"))
    assert "robust_pgd_linf.png" in pngs and "accuracy_vs_latency.png" in pngs and "accuracy_vs_size.png" in pngs
    for name in pngs:
        assert f"]({name})" in report
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["history", "--metric", "clean_acc", "--results", str(out), "--plot", str(tmp_path / "h.png")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "| cnn" in ln]
    assert len(lines) == 2  # one per run
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_history_replaces_a_rerun_of_the_same_run_id(tmp_path):
    df = pd.DataFrame(
        [{"run_id": "r1", "suite": "s", "dataset": "d", "model": "m", "arch": "a", "defense": "none",
          "compression": "none", "format": "torch", "runtime": "torch", "device": "cpu", "metric": "clean_acc",
          "attack": None, "norm": None, "eps": None, "value": 0.9, "n": 10, "batch_size": None}]
    )  # fmt: skip
    db = tmp_path / "h.sqlite"
    append(db, df, "2026-01-01T00:00:00+00:00")
    append(db, df.assign(value=0.8), "2026-01-01T00:00:00+00:00")
    assert query(db, "clean_acc").value.tolist() == [0.8]
    assert query(db, "robust_acc").empty


def test_summary_leaves_missing_cells_blank_and_flags_unreliable_models():
    from robustbench_cnn.report.summary import render
    from robustbench_cnn.suite.results import Row, frame

    common = {"run_id": "r", "suite": "s", "dataset": "d", "arch": "simple_cnn"}
    df = frame(
        [
            Row(**common, model="a", metric="clean_acc", value=0.9, n=10),
            Row(**common, model="b", metric="clean_acc", value=0.8, n=10, defense="gaussian"),
            Row(**common, model="b", metric="certified_acc", value=0.5, n=10, attack="smoothing", norm="l2", eps=0.25),
            Row(**common, model="a", metric="check_grad_norm", value=0.0, n=10, norm="linf", eps=0.1),
            Row(**common, model="b", metric="check_grad_norm", value=1.0, n=10, norm="linf", eps=0.1),
        ]
    )
    manifest = {"models": {"a": {"checks": {"grad_norm": {"passed": False, "detail": "100% zero gradients"}}}}}
    text = render(df, manifest)
    assert "nan" not in text.lower()
    assert "certified l2 @0.25 %" in text and "UNRELIABLE (1 checks failed)" in text and "| reliable" in text
    assert "## Warnings" in text and "**a**: evaluation unreliable, failed `grad_norm` (100% zero gradients)" in text
