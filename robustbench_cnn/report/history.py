"""Run history: every run's rows appended to one SQLite file (standard library only)."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pandas as pd

from robustbench_cnn.contract.schema import COLUMNS, METRICS
from robustbench_cnn.errors import InputError, UnknownNameError, did_you_mean

TABLE = "results"
SERIES = ["model", "format", "runtime", "compression", "attack", "norm", "eps", "batch_size"]  # one line per key

log = logging.getLogger(__name__)


def append(db: Path, table: pd.DataFrame, started: str) -> int:
    """Add a run's rows (replacing any earlier copy of the same run id); returns rows written. A
    store SQLite cannot read is moved aside (``history.sqlite.corrupt-<time>``, with a warning) and
    a new one started: the history never stops a run from finishing or from being compared."""
    try:
        return _append(db, table, started)
    except sqlite3.DatabaseError as exc:
        aside = db.with_name(f"{db.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        db.replace(aside)
        log.warning("%s: unreadable history store (%s); moved to %s, starting a new one", db, exc, aside.name)
        return _append(db, table, started)


def _append(db: Path, table: pd.DataFrame, started: str) -> int:
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
    try:
        with sqlite3.connect(db) as con:
            return pd.read_sql_query(sql + " ORDER BY started, run_id", con, params=args)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise _unreadable(db, exc) from None


def _unreadable(db: Path, exc: BaseException) -> InputError:
    return InputError(f"{db}: not a readable history store ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                      "move it aside, and the next run starts a new one")  # fmt: skip


def known(db: Path, column: str) -> list[str]:
    """The distinct values of ``column`` in the store (empty without a store)."""
    if not db.is_file() or column not in COLUMNS:
        return []
    try:
        with sqlite3.connect(db) as con:
            rows = con.execute(f'SELECT DISTINCT "{column}" FROM {TABLE}').fetchall()
    except sqlite3.OperationalError:  # an empty store, or a database without our table
        return []
    except sqlite3.DatabaseError as exc:  # not a database at all
        raise _unreadable(db, exc) from None
    return sorted(str(v) for (v,) in rows if v is not None)


def check_names(db: Path, metric: str, model: str | None = None) -> None:
    """A typo in ``--metric`` or ``--model`` is a one-line error that suggests the closest name."""
    if metric not in METRICS:
        raise UnknownNameError(f"history --metric: unknown metric '{metric}'{did_you_mean(metric, METRICS)}")
    models = known(db, "model")
    if model is not None and models and model not in models:
        raise UnknownNameError(f"history --model: no model '{model}' in {db}{did_you_mean(model, models)}")


def _label(key: tuple) -> str:
    parts = dict(zip(SERIES, key, strict=True))
    label = [str(parts["model"]), f"{parts['format']}/{parts['runtime']}"]
    label += [str(parts["compression"])] if parts["compression"] not in ("", "none") else []
    label += [str(parts[k]) for k in ("attack", "norm") if parts[k] != ""]
    label += [f"eps {parts['eps']:g}"] if parts["eps"] != "" else []
    label += [f"bs {int(parts['batch_size'])}"] if parts["batch_size"] != "" else []
    return " ".join(label)


def plot(df: pd.DataFrame, path: Path, metric: str) -> Path:
    """Save :func:`figure` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = figure(df, metric)
    fig.savefig(path)
    plt.close(fig)
    return path


def figure(df: pd.DataFrame, metric: str):
    """``metric`` against each run's start time, one labelled line per series (model, format, runtime,
    compression, attack, eps, batch size); the x axis spans the runs (at least a day), never years."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    df = df.assign(started=pd.to_datetime(df.started, utc=True, format="ISO8601").dt.tz_localize(None))
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    for key, sub in df.fillna({c: "" for c in SERIES}).groupby(SERIES, sort=True):
        ax.plot(sub.started, sub.value, marker="o", label=_label(key))
    lo, hi = df.started.min(), df.started.max()
    pad = max((hi - lo) * 0.05, pd.Timedelta(hours=12))
    ax.set_xlim(lo - pad, hi + pad)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_title(f"{metric} across runs")
    ax.set_xlabel("run start (UTC)")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    n = len(ax.get_legend_handles_labels()[0])
    ax.legend(fontsize=6 if n > 12 else 7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + n // 30)
    fig.tight_layout()
    return fig
