"""``dashboard``: one self-contained HTML page of every run under a results root, oldest to newest.

Per suite: the headline numbers of each model variant (clean, worst-case robust at the main eps,
certified at the main radius, p50 latency, size; see :mod:`robustbench_cnn.report.leaderboard`) as a
trend across runs, and the regressions between consecutive runs as
:func:`robustbench_cnn.report.compare.compare` judges them (marked red on the charts and listed).
Runs are read from their directories (``<root>/<suite>/<run_id>/results.csv`` + ``manifest.json``);
runs present only in ``<root>/history.sqlite`` are shown too, without regression marks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from robustbench_cnn.contract.manifest import read_run_manifest
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.errors import InputError
from robustbench_cnn.report import svg
from robustbench_cnn.report.compare import compare, load_run
from robustbench_cnn.report.html import page, slug
from robustbench_cnn.report.leaderboard import leaderboard, variant_label
from robustbench_cnn.report.tolerances import Tolerances

METRICS = [("clean", "clean accuracy (%)", 100.0), ("robust", "robust accuracy at the main eps (%)", 100.0),
           ("certified", "certified accuracy at the main radius (%)", 100.0), ("p50_ms", "p50 latency (ms)", 1.0),
           ("size_bytes", "size (KiB)", 1 / 1024)]  # fmt: skip
COMPARED = {"clean": "clean_acc", "robust": "robust_acc", "certified": "certified_acc", "p50_ms": "latency_ms_p50"}


@dataclass(frozen=True)
class RunData:
    run_id: str
    suite: str
    started: str
    table: pd.DataFrame
    manifest: Mapping[str, Any]
    run_dir: Path | None  # None: known from the history store only


def discover(root: Path) -> list[RunData]:
    """Every readable run under ``root`` (run directories first, then history-only runs), oldest first."""
    runs: dict[str, RunData] = {}
    for csv in sorted(root.glob("*/*/results.csv")):
        run_dir = csv.parent
        if run_dir.is_symlink() or not (run_dir / "manifest.json").is_file():
            continue  # results/<suite>/latest, or a run without provenance
        try:
            manifest = read_run_manifest(run_dir / "manifest.json")
            table = read_csv(csv)
        except (ValueError, InputError, UnicodeDecodeError, pd.errors.ParserError):
            continue  # a half-written or foreign directory is not a run; the page lists what it read
        run_id = str(manifest.get("run_id", run_dir.name))
        runs[run_id] = RunData(run_id, str(manifest.get("suite", run_dir.parent.name)),
                               str(manifest.get("started", "")), table, manifest, run_dir)  # fmt: skip
    for run in _from_history(root / "history.sqlite"):
        runs.setdefault(run.run_id, run)
    return sorted(runs.values(), key=lambda r: (r.started, r.run_id))


def _from_history(db: Path) -> list[RunData]:
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            rows = pd.read_sql_query("SELECT * FROM results", con)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise InputError(f"{db}: not a readable history store ({exc}); move it aside to rebuild it") from None
    out = []
    for run_id, table in rows.groupby("run_id", sort=False):
        started = str(table.started.iloc[0])
        table = table.drop(columns="started").replace({None: pd.NA})
        for col in ("eps", "value", "n", "batch_size"):
            table[col] = pd.to_numeric(table[col])
        meta = {"run_id": run_id, "suite": str(table.suite.iloc[0]), "started": started}
        out.append(RunData(str(run_id), meta["suite"], started, table, meta, None))
    return out


def regressions(prev: RunData, cur: RunData) -> pd.DataFrame:
    """The rows ``compare`` calls a regression between two run directories (empty without both)."""
    if prev.run_dir is None or cur.run_dir is None:
        return pd.DataFrame()

    joined = compare(load_run(prev.run_dir), load_run(cur.run_dir), Tolerances())[0]
    return joined[joined.verdict == "REGRESSION"]


def _trend_charts(runs: list[RunData], boards: list[pd.DataFrame], flagged: set[tuple[int, str, str]]) -> list[str]:
    variants = list(dict.fromkeys(v for b in boards for v in b.variant))
    colours = {v: svg.PALETTE[i % len(svg.PALETTE)] for i, v in enumerate(variants)}
    charts = []
    for col, label, scale in METRICS:
        series = []
        for v in variants:
            pts, bad = [], []
            for i, (run, board) in enumerate(zip(runs, boards, strict=True), 1):
                row = board[board.variant == v]
                if row.empty or pd.isna(row[col].iloc[0]):
                    continue
                value = float(row[col].iloc[0]) * scale
                mark = " REGRESSION" if (i, v, col) in flagged else ""
                pts.append(svg.Point(i, value, f"{v}: {value:.4g} in run {i} ({run.run_id}){mark}", f"#run-{i}"))
                if mark:
                    bad.append(pts[-1])
            if pts:
                series.append(svg.Series(v, tuple(pts), colours[v], marker="o"))
            if bad:
                series.append(svg.Series(f"{v}: regression", tuple(bad), "#d00", False, marker="D", hollow=True))
        if series:
            chart = svg.Chart(
                f"{label.split(' (')[0]} per run", "run (oldest to newest)", label, tuple(series), xint=True
            )
            charts.append(svg.render(chart))
    return charts


def _suite_section(suite: str, runs: list[RunData]) -> str:
    boards = [leaderboard(r.table, r.manifest)[0] for r in runs]
    regs, flagged = [], set()
    for i in range(1, len(runs)):
        found = regressions(runs[i - 1], runs[i])
        for _, r in found.iterrows():
            v = variant_label(r)
            col = next((c for c, m in COMPARED.items() if m == r.metric), None)
            if col is not None:
                flagged.add((i + 1, v, col))
            regs.append(f"<li>run {i + 1} (<code>{escape(runs[i].run_id)}</code>): <b>{escape(v)}</b> "
                        f"{escape(str(r.metric))} {escape(str(r.attack or ''))} {escape(str(r.eps or ''))}: "
                        f"{r.value_base:.4g} → {r.value_new:.4g}</li>")  # fmt: skip
    rows = "".join(f'<tr id="run-{i}"><td>{i}</td><td><code>{escape(r.run_id)}</code></td><td>{escape(r.started)}</td>'
                   f"<td>{escape(str(r.manifest.get('status', '')))}</td>"
                   f"<td>{'directory' if r.run_dir else 'history store'}</td></tr>"
                   for i, r in enumerate(runs, 1))  # fmt: skip
    reg_html = f"<ul>{''.join(regs)}</ul>" if regs else "<p>No regressions between consecutive runs.</p>"
    return (f'<section id="suite-{slug(suite)}"><h2>suite {escape(suite)}: {len(runs)} run(s)</h2>'
            '<table class="sortable"><thead><tr><th>#</th><th>run</th><th>started</th><th>status</th>'
            f"<th>source</th></tr></thead><tbody>{rows}</tbody></table><h3>Regressions</h3>{reg_html}"
            f"<div class='charts'>{''.join(_trend_charts(runs, boards, flagged))}</div></section>")  # fmt: skip


def render_dashboard(runs: list[RunData], root: Path) -> str:
    suites = list(dict.fromkeys(r.suite for r in runs))
    intro = (f"<p class='note'>{len(runs)} run(s) of {len(suites)} suite(s) under <code>{escape(str(root))}</code>. "
             "Regressions are <code>compare</code>'s verdicts between consecutive runs of a suite (default "
             "tolerances); hover a point for its value.</p>")  # fmt: skip
    body = "\n".join(_suite_section(s, [r for r in runs if r.suite == s]) for s in suites)
    return page("robustbench-cnn dashboard", f"<h1>robustbench-cnn dashboard</h1>{intro}{body}")


def write_dashboard(root: Path, out: Path | None = None) -> Path:
    """Write the dashboard (default ``root/dashboard.html``); one line if there is nothing to show."""
    if not root.is_dir():
        raise InputError(f"{root}: no such results directory; pass --results DIR")
    runs = discover(root)
    if not runs:
        raise InputError(f"{root}: no runs found (expected <suite>/<run_id>/results.csv or history.sqlite)")
    path = out or root / "dashboard.html"
    path.write_text(render_dashboard(runs, root), encoding="utf-8")
    return path
