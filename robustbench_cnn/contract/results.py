"""The results contract: one tidy row per measurement (columns and metrics: ``robustbench_cnn.contract.schema``).

Writing is atomic (:func:`atomic_write`); reading (:func:`read_csv`) is the boundary every consumer
(compare, history, report, resume) goes through, so it validates everything: UTF-8, the header, the
field count, types, finiteness, each metric's range and duplicate row keys.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from robustbench_cnn.atomic import atomic_write
from robustbench_cnn.contract.schema import COLUMNS, METRIC_SPECS, METRICS, NUMERIC, ROW_KEY
from robustbench_cnn.errors import RobustBenchError, did_you_mean

REQUIRED = COLUMNS[:16]  # batch_size is an extension older tables lack
TEXT_REQUIRED = ("run_id", "suite", "dataset", "model", "arch", "defense", "compression", "format", "runtime",
                 "device", "metric")  # fmt: skip
INTEGER = ("n", "batch_size")


class ResultsError(RobustBenchError, ValueError):
    """A results table that breaks the contract (exit code 2); the message names file, line, column and fix."""

    exit_code = 2


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
        if METRIC_SPECS[self.metric].interval and self.n and self.ci_low is None:
            from robustbench_cnn.metrics import clopper_pearson  # torch: loaded where rows are made, not read

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
    atomic_write(path, lambda fh: df.to_csv(fh, index=False, na_rep="", float_format="%.10g"), text=True)


def read_csv(path: Path) -> pd.DataFrame:
    """A validated results table (``eps``/``value`` float, ``n``/``batch_size`` Int64, empty cells NaN).

    Raises :class:`ResultsError` (exit code 2, also a ``ValueError``) with one line naming the file,
    the line and column, and the fix."""
    path = Path(path)
    header, records = _records(path)
    numbers = [_check_record(path, line, dict(zip(header, rec, strict=True))) for line, rec in records]
    df = pd.DataFrame([rec for _, rec in records], columns=header, dtype=object)
    df = df.mask(df == "")
    for col in NUMERIC:
        if col in df.columns:
            df[col] = pd.array([num[col] for num in numbers], dtype="Int64" if col in INTEGER else "float64")
    key = [c for c in ROW_KEY if c in df.columns]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        first, second = (records[int(i)][0] for i in df.index[dup][:2])
        raise ResultsError(f"{path}: lines {first} and {second} measure the same row ({', '.join(key)} equal); "
                           "delete one of them")  # fmt: skip
    return df


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _records(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the records, as strings, after checking encoding, header and field counts."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read the results table ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ResultsError(
            f"{path}: line {line}: invalid UTF-8 at byte {exc.start}; re-save the file as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, rec) for rec in reader]
    except csv.Error as exc:
        raise ResultsError(f"{path}: line {reader.line_num}: not valid CSV ({exc}); fix the quoting") from None
    if not rows:
        raise ResultsError(f"{path}: empty file, not a results table (header: {','.join(REQUIRED)})")
    header = rows[0][1]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ResultsError(f"{path}: not a results table, missing columns {', '.join(missing)}")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise ResultsError(f"{path}: line 1: column {_short(repeated[0])} appears twice; keep one")
    records = []
    for line, rec in rows[1:]:
        if not rec:  # a blank line
            continue
        if len(rec) != len(header):
            raise ResultsError(f"{path}: line {line} has {len(rec)} fields, the header {len(header)}; "
                               "quote values that contain commas")  # fmt: skip
        records.append((line, rec))
    return header, records


def _number(path: Path, line: int, col: str, text: str, integer: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ResultsError(f"{path}: line {line}, column '{col}': {_short(text)} is not {kind}; "
                           "write a plain decimal (e.g. 0.25, no thousands separator)") from None  # fmt: skip
    if not math.isfinite(value):
        raise ResultsError(f"{path}: line {line}, column '{col}': {_short(text)} is not finite; "
                           "a measurement that failed belongs in failed_cells, not in the table")  # fmt: skip
    if integer and (value != int(value) or abs(value) >= 2**53):
        raise ResultsError(f"{path}: line {line}, column '{col}': {_short(text)} is not an integer; write a count")
    return int(value) if integer else value


def _check_record(path: Path, line: int, rec: dict[str, str]) -> dict[str, float | int | None]:
    """One record against the contract (types, finiteness, the metric's range); its parsed numbers."""
    for col in TEXT_REQUIRED:
        if not rec[col].strip():
            raise ResultsError(f"{path}: line {line}, column '{col}' is empty; every row names its {col}")
    metric = rec["metric"]
    if metric not in METRICS:
        raise ResultsError(f"{path}: line {line}, column 'metric': unknown metric {_short(metric)}"
                           f"{did_you_mean(metric, METRICS)}")  # fmt: skip
    if not rec["value"].strip():
        raise ResultsError(f"{path}: line {line}, column 'value' is empty; every row needs its measurement")
    value = _number(path, line, "value", rec["value"])
    spec = METRIC_SPECS[metric]
    if spec.high is not None and not spec.in_range(value):
        raise ResultsError(f"{path}: line {line}, column 'value': {metric} = {value:g} is outside [0, 1]; "
                           "accuracies, agreements and checks are fractions")  # fmt: skip
    if not spec.in_range(value):
        raise ResultsError(f"{path}: line {line}, column 'value': {metric} = {value:g} is negative; "
                           "latencies, sizes, counts and differences are >= 0")  # fmt: skip
    numbers: dict[str, float | int | None] = {"value": value}
    for col, low in (("eps", 0.0), ("n", 0.0), ("batch_size", 1.0)):
        text = rec.get(col, "").strip()
        numbers[col] = _number(path, line, col, text, col in INTEGER) if text else None
        if text and numbers[col] < low:  # type: ignore[operator]
            raise ResultsError(f"{path}: line {line}, column '{col}': {_short(text)} is below {low:g}; "
                               f"{col} must be >= {low:g}")  # fmt: skip
    for col in ("ci_low", "ci_high"):  # a 95% interval of an accuracy: a fraction, or empty
        text = rec.get(col, "").strip()
        numbers[col] = _number(path, line, col, text) if text else None
        if text and not 0 <= numbers[col] <= 1:  # type: ignore[operator]
            raise ResultsError(f"{path}: line {line}, column '{col}': {_short(text)} is outside [0, 1]; "
                               "an interval of a fraction lies in [0, 1] (or leave it empty)")  # fmt: skip
    _check_interval(path, line, rec, numbers)
    return numbers


def _check_interval(path: Path, line: int, rec: dict[str, str], numbers: dict[str, float | int | None]) -> None:
    """Both interval bounds or neither, in order, around the row's value (``compare`` relies on them)."""
    low, high, value = numbers["ci_low"], numbers["ci_high"], numbers["value"]
    if (low is None) != (high is None) or (low is not None and high is not None and low > high):
        pair = f"{_short(rec.get('ci_low', ''))} and {_short(rec.get('ci_high', ''))}"
        raise ResultsError(f"{path}: line {line}, columns 'ci_low'/'ci_high': {pair} are not an interval; "
                           "give both, low <= high, or neither")  # fmt: skip
    if low is not None and high is not None and value is not None and not low - 1e-9 <= value <= high + 1e-9:
        raise ResultsError(f"{path}: line {line}, column 'value': {value:g} is outside its interval "
                           f"[{low:g}, {high:g}]; recompute the interval from value and n")  # fmt: skip
