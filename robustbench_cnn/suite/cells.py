"""A run as a set of cells: one model variant x one measurement, each an independent unit.

A cell is named by a content hash of everything it depends on (the model's weights key, the
data fingerprint, the seed, and the cell's own parameters), so the same cell in a resumed run,
or on another process, has the same id. Finished cells are stored under ``run_dir/cells/`` as
``<id>.csv`` (its rows) plus ``<id>.<name>.npy`` arrays that later cells of the same model read:
``mask`` (clean-correct images for attacks, attack survivors for the worst case) and ``adv`` (the
adversarial images, kept when the model is exported, so the deployed artefact is evaluated on the
examples crafted on its float source). The CSV is written last, atomically, and marks the cell as
done; nothing is unpickled on reload.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustbench_cnn.atomic import atomic_write
from robustbench_cnn.attacks.sanity import FIXED_BUDGET
from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.suite.results import read_csv, write_csv
from robustbench_cnn.suite.spec import ModelSpec, SuiteSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    model: str
    kind: str  # clean | preflight | attack | converge | ensemble | worst_case | certify | checks | latency | export
    params: tuple[tuple[str, Any], ...] = ()
    deps: tuple[str, ...] = ()  # labels of this model's cells whose arrays it reads

    @property
    def label(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params if k in ("attack", "norm", "eps", "format", "precision"))
        return f"{self.kind}({args})" if args else self.kind

    def param(self, key: str) -> Any:
        return dict(self.params)[key]

    def cell_id(self, model_key: str, data_fingerprint: str, seed: int, surrogate_key: str = "") -> str:
        """Content hash of the cell and what it depends on (the surrogate matters to ``checks`` only)."""
        # the model's name too: two models trained by the same recipe share weights, never results
        inputs = (self.model, model_key, data_fingerprint, str(seed), surrogate_key if self.kind == "checks" else "")
        blob = json.dumps([self.kind, self.params, inputs], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def plan(spec: SuiteSpec, mspec: ModelSpec) -> list[Cell]:
    """The cells of one model, in dependency order."""
    m = mspec.name
    crafting = spec.performance.crafting_params()  # non-default settings only: default ids stay stable
    clean = Cell(m, "clean", crafting if spec.performance.attack_precision != "fp32" else ())
    cells = [clean]
    groups: dict[tuple[str, float], list[str]] = {}
    if spec.checks.enabled:  # logits, class count, randomness: before any attack
        asked = {ev.attack for ev in spec.evaluations} | (
            set(spec.ensemble.members) if spec.ensemble.enabled else set()
        )
        cells.append(Cell(m, "preflight", (("attacks", tuple(sorted(asked))),)))
    for ev in spec.evaluations:
        for eps in ev.eps:
            params = (("attack", ev.attack), ("norm", ev.norm), ("eps", eps), ("steps", ev.steps),
                      ("step_size", ev.step_size), ("restarts", ev.restarts), *crafting)  # fmt: skip
            cell = Cell(m, "attack", params, deps=(clean.label,))
            cells.append(cell)
            groups.setdefault((ev.norm, eps), []).append(cell.label)
    cells += convergence_cells(spec, cells, clean.label)
    ens = spec.ensemble
    for (norm, eps), labels in groups.items():
        params: tuple[tuple[str, Any], ...] = (("attack", "worst_case"), ("norm", norm), ("eps", eps))
        if ens.enabled and eps > 0:  # the headline worst case: the suite's attacks and the ensemble
            ensemble = Cell(m, "ensemble", (("attack", "ensemble"), ("norm", norm), ("eps", eps),
                                            *sorted(ens.model_dump().items()), *crafting), (clean.label,))  # fmt: skip
            cells.append(ensemble)
            labels = [*labels, ensemble.label]
            params += (("ensemble", ensemble.params[3:]),)
        if len(labels) > 1:
            cells.append(Cell(m, "worst_case", params, tuple(labels)))
    sigma = getattr(mspec.defense, "sigma", None)
    if sigma is not None:
        cells.append(Cell(m, "certify", (("sigma", sigma), *sorted(spec.certify.model_dump().items()))))
    if spec.checks.enabled:
        cells.append(Cell(m, "checks", (("eps", spec.check_eps), *sorted(spec.checks.model_dump().items()), *crafting)))
    if spec.latency.enabled:
        cells.append(Cell(m, "latency", tuple(sorted(spec.latency.model_dump().items()))))
    for ex in spec.exports:
        if ex.models is None or m in ex.models:
            params = tuple(sorted(ex.model_dump(exclude={"models"}).items()))
            latency = (("latency", tuple(sorted(spec.latency.model_dump().items()))),)
            attacks = tuple(c.label for c in cells if c.kind == "attack")
            cells.append(Cell(m, "export", params + latency, deps=(clean.label, *attacks)))
    return cells


def convergence_cells(spec: SuiteSpec, cells: list[Cell], clean: str) -> list[Cell]:
    """A ``more_steps`` check of every iterative attack cell (eps > 0) against more steps and restarts."""
    cfg = spec.checks
    if not (cfg.enabled and cfg.every_budget):
        return []
    keys = ("more_steps_factor", "more_restarts", "tolerance", "eval_size")
    settings = tuple((k, getattr(cfg, k)) for k in keys)
    return [
        Cell(c.model, "converge", c.params + settings, deps=(clean, c.label))
        for c in cells
        if c.kind == "attack" and c.param("eps") > 0 and c.param("attack") not in FIXED_BUDGET
    ]


class CellStore:
    """Finished cells of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "cells"

    def done(self, cell_id: str) -> bool:
        return (self.dir / f"{cell_id}.csv").is_file()

    def load(self, cell_id: str) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
        arrays = {
            path.name.split(".")[1]: torch.from_numpy(np.load(path, allow_pickle=False))
            for path in self.dir.glob(f"{cell_id}.*.npy")
        }
        return read_csv(self.dir / f"{cell_id}.csv"), arrays

    def load_if_done(self, cell_id: str) -> tuple[pd.DataFrame, dict[str, torch.Tensor]] | None:
        """A finished cell's rows and arrays; ``None`` if it is not done, or if its files cannot be
        read (a warning names the file; the cell is computed again)."""
        if not self.done(cell_id):
            return None
        try:
            return self.load(cell_id)
        except (OSError, ValueError, RobustBenchError) as exc:
            log.warning("cell %s: unreadable stored result (%s); computing it again", cell_id, exc)
            return None

    def save(self, cell_id: str, rows: pd.DataFrame, arrays: dict[str, torch.Tensor]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            values = array.cpu().numpy()
            atomic_write(self.dir / f"{cell_id}.{name}.npy", lambda fh, v=values: np.save(fh, v, allow_pickle=False))
        write_csv(rows, self.dir / f"{cell_id}.csv")  # last: its presence marks the cell done

    def count(self) -> int:
        return len(list(self.dir.glob("*.csv"))) if self.dir.is_dir() else 0
