"""The inline stylesheet and script of the HTML pages (hand-written vanilla JS: sort, filter, tooltip).

Kept as Python strings so they ship with the package (no package-data configuration) and the pages
stay self-contained: nothing is fetched from a server or a CDN.
"""

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1400px;
       padding: 0 16px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e5e5e5; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-dir="asc"]::after { content: " \\25B2"; font-size: 10px; }
table.sortable th[data-dir="desc"]::after { content: " \\25BC"; font-size: 10px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num .ci { color: #777; font-size: 11px; }
td.bad { color: #b00; font-weight: 600; } td.ok { color: #070; }
tr:target, section:target h3 { background: #fff3b0; }
a { color: #1a5fb4; text-decoration: none; } a:hover { text-decoration: underline; }
.scroll { overflow-x: auto; }
#filter { width: 360px; padding: 5px 8px; margin: 6px 0; font-size: 14px; }
.note { color: #555; font-size: 13px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { border: 1px solid #eee; background: #fff; }
svg .plot { fill: #fcfcfc; stroke: #999; } svg .grid { stroke: #eee; }
svg .tick { font-size: 10px; fill: #555; } svg .alabel { font-size: 11px; fill: #333; }
svg .ctitle { font-size: 13px; font-weight: 600; fill: #222; } svg .legend { font-size: 10px; fill: #333; }
svg .vline { stroke: #555; stroke-dasharray: 3 3; } svg .vlabel { font-size: 10px; fill: #444; }
svg .pt { cursor: pointer; } svg .pt:hover { stroke-width: 3; }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 4px 8px; border-radius: 4px;
       font-size: 12px; max-width: 420px; z-index: 10; }
"""

JS = """
"use strict";
function sortKey(td) {
  const v = td.dataset.v !== undefined ? td.dataset.v : td.textContent.trim();
  if (v === "") return null;
  const n = Number(v);
  return Number.isNaN(n) ? v.toLowerCase() : n;
}
function sortTable(table, col, th) {
  const dir = th.dataset.dir === "desc" ? "asc" : "desc";
  table.querySelectorAll("th").forEach((h) => delete h.dataset.dir);
  th.dataset.dir = dir;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = sortKey(a.cells[col]), y = sortKey(b.cells[col]);
    if (x === null || y === null) return (x === null) - (y === null);  // blanks last either way
    const c = x < y ? -1 : x > y ? 1 : 0;
    return dir === "asc" ? c : -c;
  });
  rows.forEach((r) => body.appendChild(r));
}
document.querySelectorAll("table.sortable").forEach((table) => {
  table.querySelectorAll("th").forEach((th, i) => th.addEventListener("click", () => sortTable(table, i, th)));
});
const filter = document.getElementById("filter");
if (filter) {
  filter.addEventListener("input", () => {
    const q = filter.value.trim().toLowerCase();
    document.querySelectorAll("table.filterable tbody tr, #leaderboard tbody tr").forEach((tr) => {
      tr.hidden = q !== "" && !tr.textContent.toLowerCase().includes(q);
    });
  });
}
const tip = document.getElementById("tip");
document.querySelectorAll("[data-tip]").forEach((el) => {
  el.addEventListener("mouseenter", () => { tip.textContent = el.dataset.tip; tip.hidden = false; });
  el.addEventListener("mousemove", (e) => {
    tip.style.left = e.clientX + 12 + "px"; tip.style.top = e.clientY + 12 + "px";
  });
  el.addEventListener("mouseleave", () => { tip.hidden = true; });
});
"""
