"""The driver's record of a run: the manifest and the results table, rebuilt from the cells.

Every finished cell (computed or reused) adds its rows to the table and its stored ``meta`` to its
model's manifest entry, then both files are rewritten atomically; so whatever a kill interrupts,
``--resume`` rebuilds the same manifest from the cells on disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from robustbench_cnn.contract.manifest import FailedCell, RunManifest, write_json
from robustbench_cnn.contract.results import frame, write_csv
from robustbench_cnn.engine.cells import merge_meta


class RunRecord:
    def __init__(self, run_dir: Path, manifest: RunManifest) -> None:
        self.run_dir = run_dir
        self.manifest = manifest
        self.frames: dict[int, pd.DataFrame] = {}  # by the cell's position in the plan: one order for any driver
        self.computed = 0
        self.reused = 0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add_seconds(name, time.perf_counter() - start)

    def add_seconds(self, stage: str, seconds: float) -> None:
        stages = self.manifest.setdefault("stage_seconds", {})
        stages[stage] = round(stages.get(stage, 0.0) + seconds, 3)

    def model_prepared(self, name: str, info: Mapping[str, Any]) -> None:
        entry = self.manifest["models"].setdefault(name, {})
        entry.update({k: v for k, v in info.items() if k != "trained_seconds"})
        if "trained_seconds" in info:
            self.add_seconds("train", float(info["trained_seconds"]))

    def cell_done(
        self, order: int, model: str, label: str, rows: pd.DataFrame, record: Mapping[str, Any], reused: bool
    ) -> None:
        """A finished cell (``order``: its position in the run's plan): its rows, its stored meta and
        seconds; then the files are saved."""
        entry = self.manifest["models"].setdefault(model, {})
        merge_meta(entry, record.get("meta") or {})
        if record.get("seconds") is not None:
            entry.setdefault("cell_seconds", {})[label] = record["seconds"]
        self.frames[order] = rows
        if reused:
            self.reused += 1
        else:
            self.computed += 1
        self.save()

    def cell_failed(self, model: str, label: str, cell_id: str, message: str, signal: str | None = None) -> None:
        """``signal``: the native crash signal (``SIGSEGV``) of a cell that killed the run's process."""
        entry = FailedCell(model=model, cell=label, id=cell_id, status="error", error=message)
        if signal:
            entry["signal"] = signal
        self.manifest.setdefault("failed_cells", []).append(entry)

    def table(self) -> pd.DataFrame:
        """The results table of the cells recorded so far, in plan order."""
        frames = [self.frames[k] for k in sorted(self.frames) if not self.frames[k].empty]
        return pd.concat(frames, ignore_index=True) if frames else frame([])

    def save(self, table: pd.DataFrame | None = None) -> pd.DataFrame:
        """Write ``results.csv`` (``table``, default :meth:`table`) and ``manifest.json``; the table."""
        self.manifest["cells"] = {"computed": self.computed, "reused": self.reused,
                                  "failed": len(self.manifest.get("failed_cells", []))}  # fmt: skip
        table = self.table() if table is None else table
        write_csv(table, self.run_dir / "results.csv")
        write_json(self.manifest, self.run_dir / "manifest.json")
        return table
