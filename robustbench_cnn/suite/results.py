"""The results contract: one tidy row per measurement (columns and metrics: ``robustbench_cnn.schema``)."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from robustbench_cnn.schema import ACCURACY_METRICS, COLUMNS, METRICS, NUMERIC


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
    ci_low: float | None = None  # accuracy rows: 95% Clopper-Pearson interval from value and n (filled in)
    ci_high: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric '{self.metric}' is not in the results vocabulary")
        if not math.isfinite(self.value):
            raise ValueError(f"{self.model}/{self.metric}: value {self.value} is not finite")
        if self.metric in ACCURACY_METRICS and self.n and self.ci_low is None:
            from robustbench_cnn.metrics import clopper_pearson

            low, high = clopper_pearson(self.value, self.n)
            object.__setattr__(self, "ci_low", low)
            object.__setattr__(self, "ci_high", high)


def frame(rows: Iterable[Row]) -> pd.DataFrame:
    df = pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col])
    df["n"] = df["n"].astype("Int64")
    df["batch_size"] = df["batch_size"].astype("Int64")
    return df


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write atomically (temp file + rename): a reader never sees a half-written table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=False, na_rep="", float_format="%.10g")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in COLUMNS[:16] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a results table, missing columns {', '.join(missing)}")
    return df
