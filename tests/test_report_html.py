"""report.html (self-contained, links resolve, renders and sorts in headless Chromium), the dashboard
across runs with compare's regressions, and export-results."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from cdp import Browser, find_chromium

from robustbench_cnn.cli.main import main
from robustbench_cnn.contract.results import Row, frame, read_csv, write_csv
from robustbench_cnn.metrics import clopper_pearson
from robustbench_cnn.report.html import render_html, write_html

BASELINES = Path(__file__).resolve().parents[1] / "results" / "baselines"


def _run(tmp_path: Path) -> tuple[pd.DataFrame, dict, Path]:
    """A small run directory: a model with an ONNX int8 export, a smoothed model, checks, and cells/."""
    c = {"run_id": "r1", "suite": "s", "dataset": "digits", "arch": "simple_cnn", "n": 100}
    onnx = {"compression": "int8", "format": "onnx", "runtime": "onnxruntime"}
    gauss = {"defense": "gaussian"}

    def a(metric: str, value: float, **kw) -> Row:
        return Row(**c, model=kw.pop("model", "a"), metric=metric, value=value, **kw)

    rows = [a("clean_acc", 0.98), a("clean_acc", 0.97, **onnx), a("clean_acc", 0.95, model="g", **gauss)]
    pgd = {"attack": "pgd", "norm": "linf"}
    for eps, v, o, g in ((0.05, 0.6, 0.62, 0.8), (0.1, 0.2, 0.25, 0.5)):
        rows += [a("robust_acc", v, eps=eps, **pgd), a("robust_acc", o, eps=eps, **pgd, **onnx),
                 a("robust_acc", g, eps=eps, model="g", **pgd, **gauss),
                 a("robust_acc", v - 0.05, attack="worst_case", norm="linf", eps=eps)]  # fmt: skip
    smooth = {"model": "g", "attack": "smoothing", "norm": "l2", **gauss}
    rows += [a("certified_acc", v, eps=r, **smooth) for r, v in ((0.0, 0.9), (0.25, 0.7), (0.5, 0.4), (0.75, 0.0))]
    rows += [a("size_bytes", 300_000), a("size_bytes", 90_000, **onnx), a("latency_ms_p50", 0.8, batch_size=1),
             a("latency_ms_p50", 0.1, batch_size=1, **onnx), a("check_grad_norm", 1.0, norm="linf", eps=0.1),
             a("check_grad_norm", 0.0, norm="linf", eps=0.1, model="g", **gauss)]  # fmt: skip
    df = frame(rows)
    checks = {"grad_norm": {"passed": False, "detail": "90% zero gradients"}}
    models = {"g": {"certify": {"sigma": 0.25, "n": 1000, "alpha": 0.001}, "checks": checks}}
    manifest = {"run_id": "r1", "suite": "s", "status": "complete", "seed": 0, "device": "cpu",
                "started": "2026-01-01", "models": models,
                "threat_models": [{"norm": "linf", "eps": 0.1, "rule": "declared in the suite"}]}  # fmt: skip
    run_dir = tmp_path / "run"
    write_csv(df.iloc[:2], run_dir / "cells" / "abc123.csv")  # the clean cell of both variants of a
    write_csv(df, run_dir / "results.csv")
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return df, manifest, run_dir


def test_report_html_is_self_contained_and_every_link_resolves(tmp_path):
    df, manifest, run_dir = _run(tmp_path)
    text = write_html(df, manifest, run_dir).read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) == {"http://www.w3.org/2000/svg"}  # the SVG namespace only
    ids = set(re.findall(r'id="([^"]+)"', text))
    anchors = re.findall(r'href="#([^"]+)"', text)
    assert anchors and all(a in ids for a in anchors)
    cells = re.findall(r'href="(cells/[^"]+)"', text)
    assert cells == ["cells/abc123.csv", "cells/abc123.csv"] and (run_dir / cells[0]).is_file()
    board = text[text.index('id="leaderboard"') : text.index("</table>", text.index('id="leaderboard"'))]
    assert board.count("<tr id=") == 3  # a, a / int8 / onnx / onnxruntime, g
    # worst case at the main eps (linf 0.1) for a; min over attacks for the export; certified at 0.5 (< 0.62)
    assert 'data-v="0.15"' in board and ">25.0*<" in board and 'data-v="0.4"' in board
    assert "UNRELIABLE (grad_norm)" in board and "certifiable 0.62" in text
    assert "90% zero gradients" in text and text.count("<svg") == 7  # pgd, worst case, certified, 4 cost charts


@pytest.mark.skipif(find_chromium() is None, reason="no chromium")
def test_report_renders_and_sorts_in_headless_chromium(tmp_path):
    df, manifest, run_dir = _run(tmp_path)
    page = write_html(df, manifest, run_dir)
    column = "[...document.querySelectorAll('#leaderboard tbody tr')].map(r => Number(r.cells[4].dataset.v))"
    with Browser(find_chromium()) as browser:
        browser.open(page.as_uri())
        assert browser.evaluate("document.querySelectorAll('svg.chart circle, svg.chart polygon').length") > 10
        first = browser.evaluate(column)  # a's worst case, then the export's upper bound, then the UNRELIABLE g
        browser.evaluate("document.querySelectorAll('#leaderboard th')[4].click()")  # clean %
        desc = browser.evaluate(column)
        browser.evaluate("document.querySelectorAll('#leaderboard th')[4].click()")
        asc = browser.evaluate(column)
        browser.evaluate("const f = document.getElementById('filter'); f.value = 'onnx';"
                         "f.dispatchEvent(new Event('input'))")  # fmt: skip
        shown = browser.evaluate(
            "[...document.querySelectorAll('#leaderboard tbody tr')].filter(r => !r.hidden).length"
        )
        shot = browser.screenshot(tmp_path / "report.png")
        errors = browser.errors()
    assert errors == []
    assert first == [0.98, 0.97, 0.95] and desc == [0.98, 0.97, 0.95] and asc == [0.95, 0.97, 0.98]
    assert shown == 1
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("RB_SCREENSHOT_DIR"):  # to look at it
        shutil.copy(shot, Path(os.environ["RB_SCREENSHOT_DIR"]) / "report_test.png")


def _baseline_run(root: Path, run_id: str, started: str, robust_drop: float = 0.0) -> Path:
    df = read_csv(BASELINES / "smoke.csv").assign(run_id=run_id)
    hit = (df.model == "simple_cnn_pgd_at") & (df.attack == "worst_case") & (df.eps == 0.1) & (df.format == "torch")
    df.loc[hit, "value"] -= robust_drop
    for i in df.index[hit]:  # the interval follows the value, as a run writes it
        df.loc[i, ["ci_low", "ci_high"]] = clopper_pearson(df.loc[i, "value"], int(df.loc[i, "n"]))
    manifest = json.loads((BASELINES / "smoke.manifest.json").read_text()) | {"run_id": run_id, "started": started}
    run_dir = root / "smoke" / run_id
    write_csv(df, run_dir / "results.csv")
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def test_dashboard_trends_runs_and_marks_compares_regressions(tmp_path, capsys):
    from robustbench_cnn.report.history import append

    _baseline_run(tmp_path, "r1", "2026-01-01T00:00:00+00:00")
    _baseline_run(tmp_path, "r2", "2026-01-02T00:00:00+00:00", robust_drop=0.3)
    history_only = read_csv(BASELINES / "smoke.csv").assign(run_id="r0")
    append(tmp_path / "history.sqlite", history_only, "2025-12-31T00:00:00+00:00")
    assert main(["dashboard", "--results", str(tmp_path)]) == 0
    text = (tmp_path / "dashboard.html").read_text()
    assert "suite smoke: 3 run(s)" in text and text.count("history store") == 1
    regressions = re.findall(r"<li>run (\d) \(<code>(\w+)</code>\): <b>([^<]+)</b> (\w+) (\w+)", text)
    assert regressions == [("3", "r2", "simple_cnn_pgd_at", "robust_acc", "worst_case")]
    assert "simple_cnn_pgd_at: regression" in text  # marked on the trend chart
    capsys.readouterr()
    assert main(["dashboard", "--results", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such results directory" in err[0]


def test_export_results_json_keeps_numbers_as_numbers(tmp_path, capsys):
    run_dir = _baseline_run(tmp_path, "r1", "2026-01-01T00:00:00+00:00")
    assert main(["export-results", str(run_dir), "--out", str(tmp_path / "r.json")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    table = read_csv(run_dir / "results.csv")
    assert doc["format"] == "robustbench-cnn-results" and doc["format_version"] == 1
    assert doc["manifest"]["run_id"] == "r1" and len(doc["rows"]) == len(table)
    lat = next(r for r in doc["rows"] if r["metric"] == "latency_ms_p50")
    assert isinstance(lat["value"], float) and isinstance(lat["n"], int) and isinstance(lat["batch_size"], int)
    assert lat["attack"] is None and sum(r["value"] for r in doc["rows"]) == pytest.approx(table.value.sum())
    capsys.readouterr()
    assert main(["export-results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory (no results.csv)" in err[0]


def test_export_results_mlflow(tmp_path, capsys):
    try:
        import mlflow
    except ImportError:
        assert main(["export-results", str(_baseline_run(tmp_path, "r1", "2026"))] + ["--format", "mlflow"]) == 2
        assert capsys.readouterr().err.strip() == ("robustbench-cnn: error: export-results --format mlflow needs "
                                                    "mlflow: pip install mlflow")  # fmt: skip
        pytest.skip("mlflow not installed: checked the one-line error only")
    run_dir = _baseline_run(tmp_path, "r1", "2026")
    assert main(["export-results", str(run_dir), "--format", "mlflow"]) == 0
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs["params.run_id"].iloc[0] == "r1"


def test_render_html_without_cells_links_rows_in_the_page(tmp_path):
    df, manifest, _ = _run(tmp_path)
    text = render_html(df, manifest, None)
    assert "cells/" not in text and 'href="#r0"' in text and '<tr id="r0">' in text
