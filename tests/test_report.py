"""report.md with real PNG plots, the Pareto front, and the history store."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from robustbench_cnn.cli.main import main
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.report.history import append, query
from robustbench_cnn.report.leaderboard import pareto_front


def test_pareto_front():
    pts = pd.DataFrame({"cost": [1, 2, 3, 4, 2.5], "acc": [80, 90, 85, 95, 91]}, index=list("abcde"))
    assert list(pareto_front(pts, "cost", "acc").index) == ["a", "b", "e", "d"]


def test_robust_plot_draws_one_line_per_variant(tmp_path, monkeypatch):
    from robustbench_cnn.contract.results import Row, frame
    from robustbench_cnn.report import plots

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
    printed = capsys.readouterr().out.split("full table: summary.md")[0].splitlines()  # paths follow it
    assert max(map(len, printed)) <= 120 and printed[1].startswith("verdict ")  # compact, not the wide table
    run_dir = (out / "tiny" / "latest").resolve()
    assert (run_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
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
    from robustbench_cnn.contract.results import Row, frame
    from robustbench_cnn.report.summary import render

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
    assert "certified l2 @0.25 %" in text and "UNRELIABLE (grad_norm)" in text and "| reliable" in text
    assert "## Warnings" in text and "**a**: evaluation unreliable, failed `grad_norm` (100% zero gradients)" in text


BASELINES = Path(__file__).resolve().parents[1] / "results" / "baselines"


def _baseline(name: str) -> tuple[pd.DataFrame, dict]:
    return read_csv(BASELINES / f"{name}.csv"), json.loads((BASELINES / f"{name}.manifest.json").read_text())


@pytest.mark.parametrize("name", ["smoke", "smoke-edge"])
def test_compact_summary_fits_120_columns_with_the_verdict_first(name):
    from robustbench_cnn.report.leaderboard import threat_model
    from robustbench_cnn.report.summary import compact, render

    df, manifest = _baseline(name)
    text = compact(df, manifest)
    lines = text.splitlines()
    assert max(len(line) for line in render(df, manifest).splitlines()) > 300  # the wide table stays wide
    assert max(len(line) for line in lines) <= 120
    assert lines[1].startswith("verdict ") and "robust linf @" in lines[1]
    variants = df[["model", "compression", "format", "runtime"]].drop_duplicates()
    rows = [ln for ln in lines[2:] if ln.split(" ")[0] in ("reliable", "UNRELIABLE", "unchecked")]
    assert len(rows) == len(variants)
    pgd = df[(df.model == "simple_cnn_pgd_at") & (df.format == "torch")]
    headline = threat_model(df, manifest).eps  # the suite's declared budget
    assert headline == 0.1
    worst = pgd[(pgd.attack == "worst_case") & (pgd.eps == headline)].value.item()
    clean = pgd[pgd.metric == "clean_acc"].value.item()
    row = next(ln for ln in rows if re.match(r"\S+ +simple_cnn_pgd_at +\d", ln))
    assert row.split()[2:4] == [f"{clean * 100:.1f}", f"{worst * 100:.1f}"]


def test_compact_summary_names_the_unreliable_model_on_the_left():
    from robustbench_cnn.report.summary import compact

    df, manifest = _baseline("smoke")
    row = next(ln for ln in compact(df, manifest).splitlines() if " simple_cnn_distilled " in ln)
    assert row.startswith("UNRELIABLE ")
    assert "warning: simple_cnn_distilled: evaluation unreliable, failed large_eps, transfer, grad_norm" in compact(
        df, manifest
    )


def test_threat_model_reads_the_declared_budget_else_the_middle_eps_and_a_certifiable_radius():
    from scipy.stats import beta, norm

    from robustbench_cnn.report.leaderboard import certifiable_radius, threat_model, threat_models
    from robustbench_cnn.report.summary import compact

    # CERTIFY's radius when all n samples vote for the top class: sigma * PhiInv(Clopper-Pearson lower bound)
    assert certifiable_radius(0.25, 1000, 0.001) == pytest.approx(0.25 * norm.ppf(beta.ppf(0.001, 1000, 1)))
    assert round(certifiable_radius(0.25, 1000, 0.001), 2) == 0.62
    df, manifest = _baseline("smoke")
    tm = threat_model(df, manifest)
    assert (tm.norm, tm.eps, tm.radius, tm.rule) == ("linf", 0.1, 0.5, "declared in the suite")
    assert round(tm.certifiable, 3) == 0.616
    older = {k: v for k, v in manifest.items() if k != "threat_models"}  # a manifest from before the field
    assert (threat_model(df, older).eps, "middle" in threat_model(df, older).rule) == (0.1, True)
    declared = {
        **manifest,
        "threat_models": [
            {"norm": "linf", "eps": 0.2, "rule": "declared in the suite"},
            {"norm": "l2", "eps": 1.0, "rule": "declared in the suite"},
        ],
    }
    assert [(t.norm, t.eps) for t in threat_models(df, declared)] == [("linf", 0.2), ("l2", 1.0)]
    text = compact(df, declared)
    assert "robust linf @0.2 %" in text and "robust l2 @1 %" in text and "at l2 1 (declared in the suite)" in text


def test_certified_plot_marks_the_certifiable_limit_and_leaves_zeros_beyond_it_unjoined(tmp_path, monkeypatch):
    from robustbench_cnn.report import plots

    df, manifest = _baseline("smoke")
    seen = {}
    monkeypatch.setattr(plots, "_save", lambda fig, ax, path: seen.update(lines=ax.get_lines()) or path.name)
    plots.certified_vs_radius(df, tmp_path, manifest)
    by_label = {line.get_label(): line for line in seen["lines"]}
    vlines = [line for line in seen["lines"] if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2]
    assert [round(line.get_xdata()[0], 3) for line in vlines] == [0.616]
    assert list(by_label["simple_cnn_gaussian"].get_xdata()) == [0.0, 0.25, 0.5]
    beyond = by_label["simple_cnn_gaussian: beyond its certifiable limit"]
    assert list(beyond.get_xdata()) == [0.75, 1.0] and beyond.get_linestyle() == "None"


def test_scatter_labels_do_not_overlap_even_on_coincident_points():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robustbench_cnn.report.plots import place_labels

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    xs, ys = [1, 1, 1, 1, 1.02, 3, 3.01], [50, 50, 50, 50, 50.5, 80, 80]
    ax.scatter(xs, ys)
    labels = place_labels(ax, xs, ys, [str(i) for i in range(1, 8)])
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in labels]
    plt.close(fig)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)


def test_cost_plots_have_clean_and_robust_panels_on_log_axes(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from robustbench_cnn.report import plots

    df, manifest = _baseline("smoke")
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    assert plots.accuracy_vs_cost(df, tmp_path, manifest) == ["accuracy_vs_latency.png", "accuracy_vs_size.png"]
    for fig in figures:
        axes = fig.get_axes()
        assert [ax.get_title().split(" vs ")[0] for ax in axes] == ["clean accuracy", "robust linf @0.1"]
        assert all(ax.get_xscale() == "log" for ax in axes)
        legend_box = fig.legends[0].get_window_extent()
        assert all(not legend_box.overlaps(ax.get_window_extent()) for ax in axes)  # the key is outside the data
        matplotlib_close(fig)


def matplotlib_close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close("all") if fig is None else fig.clf()


def test_quiet_third_party_keeps_the_terminal_clean_and_run_log_complete(tmp_path):
    import io
    import logging
    import warnings

    import torch  # noqa: F401  (installs torch's own log handlers)

    from robustbench_cnn.logs import _FILTER, private_loggers, quiet_third_party, run_log

    root = logging.getLogger()
    terminal = io.StringIO()
    handler = logging.StreamHandler(terminal)
    saved = root.level, root.handlers[:]
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(False)  # reset: pytest swaps warnings.showwarning per test
    try:
        quiet_third_party(verbose=False)
        logging.getLogger("robustbench_cnn").info("before the run")
        with run_log(tmp_path) as path:
            logging.getLogger("onnxscript.rewriter").info("Applied 14 rewrite rules")
            logging.getLogger("jax._src.xla_bridge").warning("Unable to initialize backend 'tpu'")
            logging.getLogger("onnxruntime").warning("opset fallback")
            logging.getLogger("torch.export").warning("torch's own stderr handler")
            logging.getLogger("robustbench_cnn.engine.runner").info("run started")
            torch_own = [h for lg in private_loggers() if lg.name.startswith("torch") for h in lg.handlers]
            streams = [h for h in torch_own if not isinstance(h, logging.FileHandler)]  # run.log gets everything
            assert streams and all(_FILTER in h.filters for h in streams)  # torch.export's stderr handler filtered
            warnings.warn("a quantizer notice", UserWarning, stacklevel=1)
        logging.getLogger("robustbench_cnn").info("after the run")
    finally:
        quiet_third_party(verbose=True)  # takes the filter off torch's handlers again
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
        logging.captureWarnings(False)
    shown = terminal.getvalue()
    assert "run started" in shown and "opset fallback" in shown and "after the run" in shown and "before" in shown
    assert "rewrite rules" not in shown and "tpu" not in shown and "quantizer notice" not in shown
    logged = path.read_text()
    for text in ("rewrite rules", "Unable to initialize backend 'tpu'", "opset fallback", "run started",
                 "quantizer notice", "torch's own stderr handler"):  # fmt: skip
        assert text in logged
    assert "after the run" not in logged
