"""Small inline-SVG charts for the HTML pages (no dependencies): lines and scatter with hover labels.

Every mark carries a ``<title>`` (the browser's own hover label) and a ``data-tip`` the page's script
shows in a tooltip; the legend is drawn to the right of the plot area, never over the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]  # fmt: skip
W, H, LEFT, RIGHT, TOP, BOTTOM, LEGEND = 390, 280, 52, 14, 28, 44, 215


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    tip: str
    href: str = ""


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[Point, ...]
    color: str = PALETTE[0]
    line: bool = True
    dash: str = ""  # an SVG stroke-dasharray
    marker: str = "o"  # o | s | ^ | D | none
    hollow: bool = False
    width: float = 1.8


@dataclass(frozen=True)
class Chart:
    title: str
    xlabel: str
    ylabel: str
    series: tuple[Series, ...]
    xlog: bool = False
    ylim: tuple[float, float] | None = None
    vlines: tuple[tuple[float, str], ...] = ()  # (x, label): e.g. the certifiable radius
    xint: bool = False  # x is a count (run number): integer ticks only
    notes: tuple[str, ...] = field(default=())


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / 5
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(s - raw))
    first = math.floor(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step) + 2) if first + i * step <= hi + 1e-9]


def _tick(t: float) -> str:
    return f"{t:,.0f}" if abs(t) >= 1000 else f"{t:.4g}"


def _range(values: list[float], log: bool, pad: float = 0.06) -> tuple[float, float]:
    vals = [math.log10(v) for v in values if v > 0] if log else values
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    span = max(hi - lo, 0.02 * max(abs(hi), abs(lo)), 1e-9)  # a flat series still gets a readable scale
    if hi - lo < span:
        lo, hi = lo - span / 2, hi + span / 2
    lo, hi = lo - pad * span, hi + pad * span
    return (10**lo, 10**hi) if log else (lo, hi)


def _marker(shape: str, x: float, y: float, color: str, hollow: bool, extra: str = "", inner: str = "") -> str:
    """One marker element; ``extra`` attributes, ``inner`` content (a ``<title>``)."""
    fill = "#fff" if hollow else color
    style = f'fill="{fill}" stroke="{color}" stroke-width="1.5" {extra}'.rstrip()
    if shape == "s":
        return f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" {style}>{inner}</rect>'
    if shape in ("^", "D"):
        pts = [(0, -5), (-5, 4), (5, 4)] if shape == "^" else [(0, -5), (5, 0), (0, 5), (-5, 0)]
        path = " ".join(f"{x + dx:.1f},{y + dy:.1f}" for dx, dy in pts)
        return f'<polygon points="{path}" {style}>{inner}</polygon>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" {style}>{inner}</circle>'


def render(chart: Chart) -> str:
    """The chart as an ``<svg>`` element (a string)."""
    pts = [p for s in chart.series for p in s.points]
    xs = [p.x for p in pts] + [x for x, _ in chart.vlines]
    x0, x1 = _range([x for x in xs if x > 0] if chart.xlog else xs, chart.xlog)
    y0, y1 = chart.ylim or _range([p.y for p in pts], False)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x: float) -> float:
        if chart.xlog:
            return LEFT + pw * (math.log10(x) - math.log10(x0)) / (math.log10(x1) - math.log10(x0))
        return LEFT + pw * (x - x0) / ((x1 - x0) or 1)

    def sy(y: float) -> float:
        return TOP + ph * (1 - (y - y0) / ((y1 - y0) or 1))

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W + LEGEND}" height="{H}" '
           f'viewBox="0 0 {W + LEGEND} {H}" role="img" aria-label="{escape(chart.title)}">',
           f'<text x="{LEFT}" y="16" class="ctitle">{escape(chart.title)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" class="plot"/>']  # fmt: skip
    out += _axes(chart, x0, x1, y0, y1, sx, sy)
    for x, label in chart.vlines:  # the label on the side of the line with more room
        px, right = sx(x), sx(x) < LEFT + pw / 2
        anchor, tx = ("start", px + 4) if right else ("end", px - 4)
        out.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{TOP + ph}" class="vline"/>'
            f'<text x="{tx:.1f}" y="{TOP + 14}" class="vlabel" text-anchor="{anchor}">{escape(label)}</text>'
        )
    for s in chart.series:
        out += _series(s, sx, sy)
    out += _legend(chart.series)
    return "\n".join([*out, "</svg>"])


def _axes(chart: Chart, x0: float, x1: float, y0: float, y1: float, sx, sy) -> list[str]:
    out = []
    for t in _ticks(x0, x1, chart.xlog):
        if x0 <= t <= x1 and (not chart.xint or t == int(t)):
            x = f"{sx(t):.1f}"
            out.append(
                f'<line x1="{x}" x2="{x}" y1="{TOP}" y2="{H - BOTTOM}" class="grid"/>'
                f'<text x="{x}" y="{H - BOTTOM + 14}" class="tick" text-anchor="middle">{_tick(t)}</text>'
            )
    for t in (t for t in _ticks(y0, y1, False) if y0 <= t <= y1):
        y, label = sy(t), _tick(t)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{label}</text>')  # fmt: skip
    out.append(f'<text x="{LEFT + (W - LEFT - RIGHT) / 2:.0f}" y="{H - 8}" class="alabel" text-anchor="middle">'
               f"{escape(chart.xlabel)}</text>")  # fmt: skip
    out.append(f'<text transform="translate(14 {TOP + (H - TOP - BOTTOM) / 2:.0f}) rotate(-90)" class="alabel" '
               f'text-anchor="middle">{escape(chart.ylabel)}</text>')  # fmt: skip
    return out


def _series(s: Series, sx, sy) -> list[str]:
    out = [f'<g class="series" data-name="{escape(s.name)}">']
    if s.line and len(s.points) > 1:
        path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in s.points)
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="{s.width}"{dash}/>')
    for p in s.points if s.marker != "none" else ():
        tip = escape(p.tip)
        mark = _marker(s.marker, sx(p.x), sy(p.y), s.color, s.hollow, f'class="pt" data-tip="{tip}"',
                       f"<title>{tip}</title>")  # fmt: skip
        out.append(f'<a href="{escape(p.href)}">{mark}</a>' if p.href else mark)
    out.append("</g>")
    return out


def _legend(series: tuple[Series, ...]) -> list[str]:
    out, y = [], TOP + 6
    for s in series:
        if y > H - 10:
            out.append(f'<text x="{W + 8}" y="{y}" class="legend">... {len(series)} series in all</text>')
            break
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        if s.line:
            out.append(f'<line x1="{W + 8}" x2="{W + 30}" y1="{y - 4}" y2="{y - 4}" stroke="{s.color}" '
                       f'stroke-width="{s.width}"{dash}/>')  # fmt: skip
        if s.marker != "none":
            out.append(_marker(s.marker, W + 19, y - 4, s.color, s.hollow))
        short = s.name if len(s.name) <= 32 else s.name[:31] + "…"  # the full name on hover
        out.append(f'<text x="{W + 36}" y="{y}" class="legend">{escape(short)}<title>{escape(s.name)}</title></text>')
        y += 15
    return out
