"""The results contract: one tidy row per measurement (columns and metrics: ``robustbench_cnn.schema``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from robustbench_cnn.atomic import atomic_write
from robustbench_cnn.schema import COLUMNS, METRICS, NUMERIC


@dataclass(frozen=True)
class Row:
    """One measurement. Optional fields left as None are written as empty cells."""

    run_id: str
    suite: str
    dataset: str
    model: str
    arch: str
    metric: str
    value: float
    defense: str = "none"
    compression: str = "none"
    format: str = "torch"
    runtime: str = "torch"
    device: str = "cpu"
    attack: str | None = None
    norm: str | None = None
    eps: float | None = None
    n: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric '{self.metric}' is not in the results vocabulary")
        if not math.isfinite(self.value):
            raise ValueError(f"{self.model}/{self.metric}: value {self.value} is not finite")


def frame(rows: Iterable[Row]) -> pd.DataFrame:
    df = pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col])
    df["n"] = df["n"].astype("Int64")
    df["batch_size"] = df["batch_size"].astype("Int64")
    return df


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write atomically (temp file + rename): a reader never sees a half-written table."""
    atomic_write(path, lambda fh: df.to_csv(fh, index=False, na_rep="", float_format="%.10g"), text=True)


def read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in COLUMNS[:16] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a results table, missing columns {', '.join(missing)}")
    return df
