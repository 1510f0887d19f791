"""Finished cells and shards of one run directory, and the run's cell index.

Layout under ``run_dir/cells/``: ``<id>.<name>.npy`` arrays, ``<id>.meta.json`` (format number,
label, meta) and ``<id>.csv`` rows, written in that order, each atomically: the CSV marks the cell
done. A sharded cell keeps its shards under ``<id>.shards/`` the same way (``<k>.<name>.npy``,
``<k>.json``, the JSON last), so a crash loses at most the shard being computed. ``index.json``
lists every planned cell (id, model, kind, label, parameters, inputs by role): ``edge bundle``,
``report`` and ``--resume`` read it instead of planning the suite again. Nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustbench_cnn.atomic import atomic_write, atomic_write_bytes
from robustbench_cnn.contract.results import frame, read_csv, write_csv
from robustbench_cnn.engine.cells import CELL_FORMAT, Cell, CellResult, Shard, as_plain
from robustbench_cnn.errors import RobustBenchError

log = logging.getLogger(__name__)


class StoreError(RobustBenchError):
    """A run directory's cell files or index cannot be used (exit code 2)."""

    exit_code = 2


def _json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, default=str) + "\n").encode())


def _save_arrays(prefix: Path, arrays: dict[str, torch.Tensor]) -> None:
    for name, array in arrays.items():
        values: np.ndarray = array.detach().cpu().numpy()
        atomic_write(prefix.with_name(f"{prefix.name}.{name}.npy"), partial(_write_npy, values=values))


def _write_npy(fh: Any, values: np.ndarray) -> None:
    np.save(fh, values, allow_pickle=False)


def _load_arrays(prefix: Path) -> dict[str, torch.Tensor]:
    return {
        path.name[len(prefix.name) + 1 : -4]: torch.from_numpy(np.load(path, allow_pickle=False))
        for path in prefix.parent.glob(f"{prefix.name}.*.npy")
    }


class CellStore:
    """Finished cells (and shards) of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "cells"

    def done(self, cell_id: str) -> bool:
        return (self.dir / f"{cell_id}.csv").is_file()

    def save(self, cell_id: str, cell: Cell, result: CellResult, seconds: float | None = None) -> None:
        """Arrays, then meta, then rows (last: the CSV marks the cell done)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        _save_arrays(self.dir / cell_id, result.arrays)
        meta = {"format": CELL_FORMAT, "model": cell.model, "label": cell.label, "kind": cell.kind,
                "seconds": seconds, "meta": result.meta}  # fmt: skip
        _json(self.dir / f"{cell_id}.meta.json", meta)
        write_csv(frame(result.rows), self.dir / f"{cell_id}.csv")

    def load(self, cell_id: str) -> tuple[pd.DataFrame, dict[str, torch.Tensor], dict[str, Any]]:
        """Rows, arrays and the stored record (``meta``, ``seconds``) of a finished cell."""
        record = json.loads((self.dir / f"{cell_id}.meta.json").read_text())
        if not isinstance(record, dict) or record.get("format") != CELL_FORMAT:
            found = record.get("format") if isinstance(record, dict) else None
            raise ValueError(f"cell format {found}, this version writes {CELL_FORMAT}")
        if not isinstance(record.get("meta"), dict):
            raise ValueError("meta.json has no 'meta' object")
        return read_csv(self.dir / f"{cell_id}.csv"), _load_arrays(self.dir / cell_id), record

    def load_if_done(self, cell_id: str) -> tuple[pd.DataFrame, dict[str, torch.Tensor], dict[str, Any]] | None:
        """A finished cell; ``None`` if it is not done, or if its files cannot be read or are of
        another format (a warning names the cell; it is computed again)."""
        if not self.done(cell_id):
            return None
        try:
            return self.load(cell_id)
        except (OSError, ValueError, RobustBenchError) as exc:
            log.warning("cell %s: unusable stored result (%s); computing it again", cell_id, exc)
            return None

    # shards ---------------------------------------------------------------------------------------
    def _shard_dir(self, cell_id: str) -> Path:
        return self.dir / f"{cell_id}.shards"

    def save_shard(self, cell_id: str, shard: Shard, result: CellResult, seconds: float) -> None:
        """One shard's per-image arrays and meta; the JSON (last) marks it done."""
        where = self._shard_dir(cell_id)
        where.mkdir(parents=True, exist_ok=True)
        _save_arrays(where / str(shard.index), result.arrays)
        record = {"format": CELL_FORMAT, "start": shard.start, "stop": shard.stop, "seconds": seconds,
                  "meta": result.meta}  # fmt: skip
        _json(where / f"{shard.index}.json", record)

    def load_shard(self, cell_id: str, shard: Shard) -> CellResult | None:
        """A finished shard with the same image range; ``None`` otherwise (it is computed again)."""
        path = self._shard_dir(cell_id) / f"{shard.index}.json"
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            if record.get("format") != CELL_FORMAT or (record.get("start"), record.get("stop")) != (
                shard.start,
                shard.stop,
            ):
                return None
            arrays = _load_arrays(self._shard_dir(cell_id) / str(shard.index))
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("cell %s shard %d: unusable stored result (%s); computing it again", cell_id, shard.index, exc)
            return None
        meta = dict(record.get("meta") or {}, seconds=record.get("seconds"))
        return CellResult([], arrays, meta)

    def record_attempt(self, cell_id: str, shard: Shard) -> None:
        """Append one line per attempt at a shard (``attempts.log``: how often each shard ran)."""
        where = self._shard_dir(cell_id)
        where.mkdir(parents=True, exist_ok=True)
        fd = os.open(where / "attempts.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{shard.index} {os.getpid()}\n".encode())
        finally:
            os.close(fd)

    def attempts(self, cell_id: str) -> dict[int, int]:
        """How many times each shard of a cell was started (from ``attempts.log``)."""
        path = self._shard_dir(cell_id) / "attempts.log"
        counts: dict[int, int] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                index = int(line.split()[0])
                counts[index] = counts.get(index, 0) + 1
        return counts

    def count(self) -> int:
        return len(list(self.dir.glob("*.csv"))) if self.dir.is_dir() else 0

    # the index ------------------------------------------------------------------------------------
    def write_index(self, entries: list[dict[str, Any]], suite_sha256: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _json(self.dir / "index.json", {"format": CELL_FORMAT, "suite_sha256": suite_sha256, "cells": entries})

    def read_index(self) -> dict[str, Any]:
        """The run's cell index; a missing, unreadable or other-format index is a :class:`StoreError`."""
        path = self.dir / "index.json"
        try:
            index = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: no readable cell index ({type(exc).__name__}); run the suite again "
                             "with this version to write one") from None  # fmt: skip
        if (
            not isinstance(index, dict)
            or index.get("format") != CELL_FORMAT
            or not isinstance(index.get("cells"), list)
        ):
            found = index.get("format") if isinstance(index, dict) else None
            raise StoreError(f"{path}: cell index format {found}, this version reads {CELL_FORMAT}; "
                             "run the suite again with this version")  # fmt: skip
        return index


def index_entry(cell: Cell, cell_id: str, ids: dict[str, str]) -> dict[str, Any]:
    """One cell in the run's index (``ids``: label -> id of the model's cells planned so far)."""
    return {"id": cell_id, "model": cell.model, "kind": cell.kind, "label": cell.label,
            "params": as_plain(cell.params), "inputs": [[role, ids[label]] for role, label in cell.deps]}  # fmt: skip
