"""Run history: every run's rows appended to one SQLite file (standard library only)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd

from robustbench_cnn.schema import COLUMNS

TABLE = "results"


def append(db: Path, table: pd.DataFrame, started: str) -> int:
    """Add a run's rows (replacing any earlier copy of the same run id); returns rows written."""
    db.parent.mkdir(parents=True, exist_ok=True)
    rows = table.reindex(columns=list(COLUMNS)).assign(started=started)  # columns a table predates: empty
    with sqlite3.connect(db) as con:
        cols = ", ".join(f'"{c}"' for c in rows.columns)
        con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({cols})")
        have = {r[1] for r in con.execute(f"PRAGMA table_info({TABLE})")}
        for c in rows.columns.difference(list(have), sort=False):  # a store written before a schema extension
            con.execute(f'ALTER TABLE {TABLE} ADD COLUMN "{c}"')
        con.execute(f"CREATE INDEX IF NOT EXISTS idx_metric ON {TABLE} (metric, model)")
        for run_id in rows.run_id.unique():
            con.execute(f"DELETE FROM {TABLE} WHERE run_id = ?", (run_id,))
        rows.astype(object).where(rows.notna(), None).to_sql(TABLE, con, if_exists="append", index=False)
    return len(rows)


def query(db: Path, metric: str, model: str | None = None, suite: str | None = None) -> pd.DataFrame:
    """One metric across runs, oldest first."""
    if not db.is_file():
        return pd.DataFrame(columns=[*COLUMNS, "started"])
    sql = f"SELECT * FROM {TABLE} WHERE metric = ?"
    args: list[str] = [metric]
    for col, val in (("model", model), ("suite", suite)):
        if val is not None:
            sql += f" AND {col} = ?"
            args.append(val)
    with sqlite3.connect(db) as con:
        return pd.read_sql_query(sql + " ORDER BY started, run_id", con, params=args)


def plot(df: pd.DataFrame, path: Path, metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    keys = ["model", "attack", "eps"]
    for key, sub in df.fillna({"attack": "", "eps": ""}).groupby(keys, sort=False):
        label = " ".join(str(k) for k in key if k != "")
        ax.plot(pd.to_datetime(sub.started), sub.value, marker="o", label=label)
    ax.set_title(f"{metric} across runs")
    ax.set_xlabel("run start (UTC)")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    if len(ax.get_legend_handles_labels()[0]) <= 12:
        ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
