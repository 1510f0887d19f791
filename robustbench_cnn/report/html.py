"""``report.html``: one self-contained page per run (inline CSS, SVG and a little vanilla JS; no network).

A RobustBench-style leaderboard (one row per model variant: verdict, clean, worst-case robust at the
main eps, certified at the main radius, size, p50 latency; sortable by a header click, filterable by a
text box), each number linking to the row it came from in that variant's detail table, which links the
``cells/<id>.csv`` the row was written by; charts of robustness vs eps, certified accuracy vs radius
(with the certifiable limit) and accuracy vs cost with clean and robust Pareto fronts; the warnings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.contract.verdicts import failing
from robustbench_cnn.corruptions import family
from robustbench_cnn.engine.store import CellStore, StoreError
from robustbench_cnn.report import page_assets, svg
from robustbench_cnn.report.leaderboard import (
    NO_INTERVAL,
    VARIANT,
    Interval,
    ThreatModel,
    certify_limits,
    interval_of,
    leaderboard,
    pareto_front,
    ranked,
    threat_models,
    variant_label,
)
from robustbench_cnn.report.reproduction import reproduction
from robustbench_cnn.report.reproduction import warnings as repro_warnings

IDENT = ["model", "compression", "format", "runtime", "metric", "attack", "norm", "eps", "batch_size"]
STYLES = {("torch", False): ("o", ""), ("onnx", False): ("s", "6 3"), ("onnx", True): ("^", "2 3"),
          ("tflite", False): ("D", "8 3 2 3"), ("tflite", True): ("^", "2 2")}  # fmt: skip


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _key(r: pd.Series | dict[str, Any]) -> tuple[str, ...]:
    def norm(c: str) -> str:
        v = r[c]
        if v is None or (not isinstance(v, str) and pd.isna(v)) or v == "":
            return ""
        return f"{float(v):.10g}" if c in ("eps", "batch_size") else str(v)

    return tuple(norm(c) for c in IDENT)


def cell_index(run_dir: Path | None) -> dict[tuple[str, ...], str]:
    """Which ``cells/<id>.csv`` wrote each row (by its identity); empty when the run kept no cells."""
    cells = run_dir / "cells" if run_dir is not None else None
    if cells is None or not cells.is_dir():
        return {}
    index: dict[tuple[str, ...], str] = {}
    for path in _cell_tables(cells):
        try:
            rows = read_csv(path)
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
            continue  # not a cell table: nothing to link
        for _, r in rows.iterrows():
            index.setdefault(_key(r), path.stem)
    return index


def _cell_tables(cells: Path) -> list[Path]:
    """The run's cell tables, as its cell index lists them (older runs without one: every CSV)."""

    try:
        entries = CellStore(cells.parent).read_index()["cells"]
    except StoreError:
        return sorted(cells.glob("*.csv"))
    ids = [str(e.get("id", "")) for e in entries if isinstance(e, dict)]
    return [cells / f"{i}.csv" for i in ids if i.isalnum() and (cells / f"{i}.csv").is_file()]


def _fmt(v: float | None, scale: float = 100, digits: int = 1) -> str:
    return "" if v is None or pd.isna(v) else f"{v * scale:.{digits}f}"


def _num(v: float | None, text: str, href: str, ci: Interval = NO_INTERVAL) -> str:
    """A sortable number cell; an accuracy's 95% interval ``ci`` follows it, small (``41.7 [36.6, 47.0]``)."""
    data = "" if v is None or pd.isna(v) else f"{float(v):.10g}"
    inner = f'<a href="{escape(href)}">{escape(text)}</a>' if text and href else escape(text)
    if text and ci[0] is not None and ci[1] is not None:
        inner += f' <span class="ci">[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>'
    return f'<td class="num" data-v="{data}">{inner}</td>'


def _source(rows: pd.DataFrame, metric: str, **where: Any) -> int | None:
    sub = rows[rows.metric == metric]
    for col, val in where.items():
        sub = sub[sub[col] == val]
    return None if sub.empty else int(sub.value.idxmin())


def _leaderboard_html(df: pd.DataFrame, board: pd.DataFrame, tm: ThreatModel, k: int = 1) -> str:
    """The ``k``-th headline threat model's leaderboard (the first carries the filter box)."""
    keyed = df.fillna({c: "" for c in VARIANT})
    batch = board.latency_batch.dropna()
    lat = f"p50 ms bs{int(batch.iloc[0])}" if not batch.empty else "p50 ms"
    heads = ["#", "verdict", "variant", "defense", "clean %", tm.robust_header() + " %", tm.certified_header() + " %",
             "size KiB", lat]  # fmt: skip
    box = '<input id="filter" type="search" placeholder="filter rows (e.g. onnx, UNRELIABLE, pgd_at)">'
    table_id = "leaderboard" if k == 1 else f"leaderboard-{k}"
    out = [box if k == 1 else "", f'<div class="scroll"><table id="{table_id}" class="sortable filterable"><thead><tr>',
           *(f'<th title="click to sort">{escape(h)}</th>' for h in heads), "</tr></thead><tbody>"]  # fmt: skip
    for i, r in enumerate(board.itertuples(), 1):
        rows = keyed[(keyed[VARIANT] == pd.Series(dict(zip(VARIANT, r[1:7], strict=True)))).all(axis=1)]
        anchor = slug(r.variant)

        def link(idx: int | None, anchor: str = anchor) -> str:
            return f"#r{idx}" if idx is not None else f"#v-{anchor}"

        robust_idx = None
        if tm.eps is not None:
            where = {"norm": tm.norm, "eps": tm.eps}
            if r.robust_kind == "worst_case":
                where["attack"] = "worst_case"
            robust_idx = _source(rows, "robust_acc", **where)
        cells = [f'<td class="num" data-v="{i}">{i}</td>',
                 f'<td class="{"bad" if r.verdict.startswith("UNRELIABLE") else "ok"}">{escape(r.verdict)}</td>',
                 f'<td><a href="#v-{anchor}">{escape(r.variant)}</a></td>', f"<td>{escape(str(r.defense))}</td>",
                 _num(r.clean, _fmt(r.clean), link(_source(rows, "clean_acc")), r.clean_ci),
                 _num(r.robust, _fmt(r.robust) + ("*" if r.robust_kind == "min" else "") + ("~" if r.eot else ""),
                      link(robust_idx),
                      r.robust_ci),
                 _num(r.certified, _fmt(r.certified), link(_source(rows, "certified_acc", eps=tm.radius)),
                      r.certified_ci),
                 _num(r.size_bytes, _fmt(r.size_bytes, 1 / 1024), link(_source(rows, "size_bytes"))),
                 _num(r.p50_ms, "" if pd.isna(r.p50_ms) else f"{r.p50_ms:.3g}",
                      link(_source(rows, "latency_ms_p50", batch_size=r.latency_batch)))]  # fmt: skip
        row_id = f"lb-{anchor}" if k == 1 else f"lb{k}-{anchor}"
        out.append(f'<tr id="{row_id}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    if (board.robust_kind == "min").any():
        out.append("<p class='note'>* no per-example worst case for this variant: the minimum over the attacks' "
                   "accuracies (an upper bound on the worst case), ranked after every worst case.</p>")  # fmt: skip
    if board.eot.any():
        out.append("<p class='note'>~ randomized model: its attacks differentiate the mean of checks.eot_samples "
                   "forward passes (EOT, Athalye et al. 2018), as AutoAttack's rand version does.</p>")  # fmt: skip
    return "\n".join(out)


def _threat_note(tm: ThreatModel) -> str:
    parts = []
    if tm.eps is not None:
        parts.append(f"robust = per-example worst case over every attack at the headline threat model, "
                     f"{tm.norm} {tm.eps:g} ({tm.rule or 'the run names none'}); other budgets: the details and "
                     "curves below")  # fmt: skip
    if tm.radius is not None:
        limit = f"; the largest certifiable radius is {tm.certifiable:.2f}" if tm.certifiable is not None else ""
        parts.append(f"certified = randomized-smoothing certified accuracy at L2 radius {tm.radius:g} (the largest "
                     f"evaluated radius within the certifiable limit{limit})")  # fmt: skip
    parts.append("verdict = the model's gradient-masking sanity checks (Carlini et al. 2019), run on its torch form")
    parts.append("[low, high] = the accuracy's 95% Clopper-Pearson interval from the number of images evaluated")
    return "<ul class='note'>" + "".join(f"<li>{escape(p)}</li>" for p in parts) + "</ul>"


def _style(fmt: str, compression: str) -> tuple[str, str]:
    return STYLES.get((str(fmt), "int8" in str(compression)), ("D", "4 2"))


def _robust_charts(df: pd.DataFrame, colours: dict[str, str], flagged: set[str]) -> list[svg.Chart]:
    charts = []
    robust = df[df.metric == "robust_acc"]
    for (attack, norm), sub in robust.groupby(["attack", "norm"], sort=False):
        if sub.eps.nunique() < 2:
            continue
        series = []
        for variant, m in sub.assign(variant=sub.apply(variant_label, axis=1)).groupby("variant", sort=False):
            m = m.sort_values("eps")
            marker, dash = _style(m.format.iloc[0], m.compression.iloc[0])
            exported = m.format.iloc[0] != "torch"
            name = variant + (" (UNRELIABLE)" if m.model.iloc[0] in flagged else "")
            pts = tuple(svg.Point(e, v * 100, f"{name}: {v * 100:.1f}% at {norm} eps {e:g} (n {n})", f"#r{i}")
                        for i, e, v, n in zip(m.index, m.eps, m.value, m.n, strict=True))  # fmt: skip
            series.append(svg.Series(name, pts, colours[m.model.iloc[0]], True, dash, marker, exported,
                                     1.2 if exported else 2.2))  # fmt: skip
        charts.append(svg.Chart(f"robust accuracy under {attack} ({norm})", f"eps ({norm}, images in [0, 1])",
                                "robust accuracy (%)", tuple(series), ylim=(-2, 102)))  # fmt: skip
    return charts


def _corruption_charts(df: pd.DataFrame, colours: dict[str, str], flagged: set[str]) -> list[svg.Chart]:
    """Per corruption family: accuracy against severity, the family's corruptions averaged, per variant."""
    rows = df[df.metric == "corruption_acc"]
    rows = rows.assign(family=rows.attack.map(family))
    charts = []
    for fam, sub in rows.groupby("family", sort=False):
        series = []
        for variant, m in sub.assign(variant=sub.apply(variant_label, axis=1)).groupby("variant", sort=False):
            mean = m.groupby("eps").value.mean()
            marker, dash = _style(m.format.iloc[0], m.compression.iloc[0])
            name = variant + (" (UNRELIABLE)" if m.model.iloc[0] in flagged else "")
            pts = tuple(svg.Point(s, v * 100, f"{name}: {v * 100:.1f}% at severity {s:g}") for s, v in mean.items())
            series.append(svg.Series(name, pts, colours[m.model.iloc[0]], True, dash, marker))
        names = ", ".join(sorted(sub.attack.unique()))
        charts.append(svg.Chart(f"accuracy under {fam} corruptions ({names})", "severity", "accuracy (%)",
                                tuple(series), ylim=(-2, 102), xint=True))  # fmt: skip
    return charts


def _certified_chart(df: pd.DataFrame, manifest: Mapping[str, Any], colours: dict[str, str]) -> list[svg.Chart]:
    cert = df[df.metric == "certified_acc"]
    if cert.empty:
        return []
    limits = certify_limits(manifest)
    series, vlines = [], []
    for model, m in cert.groupby("model", sort=False):
        m = m.sort_values("eps")
        limit = limits.get(model, float("inf"))
        for inside, rows in ((True, m[m.eps <= limit]), (False, m[m.eps > limit])):
            if rows.empty:
                continue
            tip = "" if inside else " (beyond the certifiable limit: 0 by construction)"
            pts = tuple(svg.Point(e, v * 100, f"{model}: {v * 100:.1f}% certified at L2 {e:g}{tip}", f"#r{i}")
                        for i, e, v in zip(rows.index, rows.eps, rows.value, strict=True))  # fmt: skip
            name = model if inside else f"{model}: beyond its limit"
            series.append(svg.Series(name, pts, colours[model], inside, hollow=not inside))
        if model in limits:
            s = manifest["models"][model]["certify"]
            vlines.append((limits[model], f"certifiable {limits[model]:.2f} (σ {s['sigma']:g}, n {s['n']:,})"))
    return [svg.Chart("certified accuracy vs L2 radius (randomized smoothing)", "L2 radius", "certified accuracy (%)",
                      tuple(series), ylim=(-2, 102), vlines=tuple(vlines))]  # fmt: skip


def _cost_charts(board: pd.DataFrame, tm: ThreatModel, colours: dict[str, str]) -> list[svg.Chart]:
    charts = []
    batch = board.latency_batch.dropna()
    costs = [("p50_ms", f"p50 latency at batch {int(batch.iloc[0])} (ms, log)", 1.0)] if not batch.empty else []
    costs.append(("size_bytes", "model size (KiB, log)", 1 / 1024))
    for cost, xlabel, scale in costs:
        for acc, ylabel in (("clean", "clean accuracy (%)"), ("robust", f"{tm.robust_header()} (%)")):
            pts = board.dropna(subset=[cost, acc])
            if pts.empty:
                continue
            series = []
            for r in pts.itertuples():
                bad = r.verdict.startswith("UNRELIABLE")
                tip = f"{r.variant}: {acc} {getattr(r, acc) * 100:.1f}%, {xlabel.split(' (')[0]} " \
                      f"{getattr(r, cost) * scale:.3g} ({r.verdict})"  # fmt: skip
                p = svg.Point(getattr(r, cost) * scale, getattr(r, acc) * 100, tip, f"#lb-{slug(r.variant)}")
                series.append(svg.Series(r.variant, (p,), colours[r.model], False,
                                         marker=_style(r.format, r.compression)[0], hollow=bad))  # fmt: skip
            usable = pts[~pts.verdict.str.startswith("UNRELIABLE")] if acc == "robust" else pts
            front = pareto_front(pd.DataFrame({"x": usable[cost] * scale, "y": usable[acc] * 100}), "x", "y")
            fp = tuple(svg.Point(x, y, "Pareto front") for x, y in zip(front.x, front.y, strict=True))
            series.append(svg.Series("Pareto front" + (" (reliable only)" if acc == "robust" else ""), fp, "#d00",
                                     True, "5 3", "none", width=1.2))  # fmt: skip
            charts.append(svg.Chart(f"{ylabel.split(' (')[0]} vs {xlabel.split(' (')[0]}", xlabel, ylabel,
                                    tuple(series), xlog=True))  # fmt: skip
    return charts


def _details(df: pd.DataFrame, cells: dict[tuple[str, ...], str]) -> str:
    out = []
    keyed = df.fillna({c: "" for c in VARIANT})
    cols = ["metric", "attack", "norm", "eps", "value", "n", "batch_size"]
    for _, rows in keyed.groupby(VARIANT, sort=False):
        name = variant_label(rows.iloc[0])
        heads = "".join(f"<th>{c}</th>" for c in [*cols, "95% interval", "cell"])
        out.append(f'<section class="variant" id="v-{slug(name)}"><h3>{escape(name)}</h3>'
                   f'<table class="detail"><thead><tr>{heads}</tr></thead><tbody>')  # fmt: skip
        for idx, r in rows.sort_values(["metric", "attack", "norm", "eps"], na_position="first").iterrows():
            vals = ["" if pd.isna(r[c]) else (f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c])) for c in cols]
            low, high = interval_of(r)
            vals.append("" if low is None else f"[{low:.4g}, {high:.4g}]")
            cell = cells.get(_key(r))
            link = f'<a href="cells/{cell}.csv">{cell[:10]}</a>' if cell else ""
            out.append(f'<tr id="r{idx}">' + "".join(f"<td>{escape(v)}</td>" for v in vals) + f"<td>{link}</td></tr>")
        out.append("</tbody></table></section>")
    return "\n".join(out)


def _warnings(manifest: Mapping[str, Any]) -> str:
    items = []
    for name, info in manifest.get("models", {}).items():
        for check, r in info.get("checks", {}).items():
            if failing(r):
                items.append(f"<b>{escape(name)}</b>: evaluation unreliable, failed <code>{escape(check)}</code> "
                             f"({escape(str(r.get('detail', '')))})")  # fmt: skip
    for cell in manifest.get("failed_cells", []):
        what, why = escape(str(cell.get("cell", ""))), escape(str(cell.get("message", "")))
        items.append(f"failed cell <code>{what}</code>: {why}")
    if not items:
        return "<p>No warnings: every sanity check passed and every cell finished.</p>"
    head = "<p>Sanity checks (Carlini et al. 2019) failed: those models' robust accuracy may be overstated.</p>"
    return head + "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _reproduction_html(table: pd.DataFrame) -> str:
    """Published vs measured per zoo figure (empty without zoo models); see :mod:`.reproduction`."""
    if table.empty:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("model", "figure", "published %", "measured % [95% CI]", "n", "verdict"))
    rows = []
    for _, r in table.iterrows():
        measured = (f"{_fmt(r.measured, digits=2)} [{_fmt(r.ci_low, digits=2)}, {_fmt(r.ci_high, digits=2)}]"
                    if pd.notna(r.measured) else "")  # fmt: skip
        n = f"{int(r.n):,}" if pd.notna(r.n) else ""
        cells = (escape(str(r.model)), escape(str(r.figure)), _fmt(r.published, digits=2), measured, n,
                 f"<b>{escape(str(r.verdict))}</b>")  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    notes = "".join(f"<li>{escape(w)}</li>" for w in repro_warnings(table))
    return (f"<h2>Reproduction of published figures</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table>" + (f"<ul>{notes}</ul>" if notes else ""))  # fmt: skip


def render_html(df: pd.DataFrame, manifest: Mapping[str, Any], run_dir: Path | None = None) -> str:
    """The whole page as one string."""
    board, tm = leaderboard(df, manifest)
    board = ranked(board)
    colours = {m: svg.PALETTE[i % len(svg.PALETTE)] for i, m in enumerate(dict.fromkeys(board.model))}
    flagged = set(board.loc[board.verdict.str.startswith("UNRELIABLE"), "model"])
    charts = _robust_charts(df, colours, flagged) + _corruption_charts(df, colours, flagged)
    charts += _certified_chart(df, manifest, colours)
    charts += _cost_charts(board, tm, colours)
    env = manifest.get("environment", {})
    title = f"{manifest.get('suite', '')} — run {manifest.get('run_id', '')}"
    m = {k: escape(str(manifest.get(k))) for k in ("status", "seed", "device", "started")}
    facts = (f"status <b>{m['status']}</b> · seed {m['seed']} · device {m['device']} "
             f"({escape(str(env.get('gpu') or env.get('cpu', '?')))}) · "
             f"wall {float(manifest.get('wall_seconds') or 0):.0f} s · started {m['started']}")  # fmt: skip
    boards = [f"<h2>Leaderboard{f' at {t.norm} {t.eps:g}' if k > 1 else ''}</h2>" + _threat_note(t)
              + _leaderboard_html(df, ranked(leaderboard(df, manifest, t)[0]), t, k)
              for k, t in enumerate(threat_models(df, manifest), 1)]  # fmt: skip
    body = [f"<h1>{escape(title)}</h1><p>{facts}</p>", *boards, "<h2>Warnings</h2>", _warnings(manifest),
            _reproduction_html(reproduction(df, manifest)), "<h2>Charts</h2>",
            "<p class='note'>Hover a point for its value; click it to jump to its row.</p>",
            "<div class='charts'>" + "\n".join(svg.render(c) for c in charts) + "</div>",
            "<h2>Details per variant</h2>", _details(df, cell_index(run_dir))]  # fmt: skip
    return page(title, "\n".join(body))


def page(title: str, body: str) -> str:
    """A complete HTML document with the shared inline stylesheet and script."""
    css, js = page_assets.CSS, page_assets.JS
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>\n'
            f"<style>\n{css}</style></head>\n<body>\n{body}\n<div id='tip' hidden></div>\n<script>\n{js}</script>\n"
            "</body></html>\n")  # fmt: skip


def write_html(df: pd.DataFrame, manifest: Mapping[str, Any], run_dir: Path) -> Path:
    path = run_dir / "report.html"
    path.write_text(render_html(df, manifest, run_dir), encoding="utf-8")
    return path
