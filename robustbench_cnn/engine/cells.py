"""The typed unit of work: a cell (one model variant x one measurement), its parameters, its shards
and its result. These are plain records, imported by the planner, the executors, the store and
both drivers (in-process and Ray); they import nothing of the suite's machinery.

A cell is named by a content hash of what it depends on (the model's name and weights key, the
data fingerprint, the seed, its kind and parameters), so the same cell in a resumed run or on
another worker has the same id. Its inputs are other cells of the same model, named by role
(``clean``, ``attack``, ``reported``), never by position.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from robustbench_cnn.attacks.crafting import Crafting
from robustbench_cnn.config.spec_measure import CertifySpec, ChecksSpec, EnsembleSpec, ExportSpec, LatencySpec
from robustbench_cnn.contract.results import Row

CELL_FORMAT = 2
"""Format of a stored cell (rows, arrays, meta) and of the run's cell index. 1: untyped cells
(before 0.6); a stored cell of another format is computed again, an index of another format refused."""


@dataclass(frozen=True)
class CleanParams:
    attack_precision: str = "fp32"  # bf16: also the clean accuracy of the crafting precision


@dataclass(frozen=True)
class PreflightParams:
    attacks: tuple[str, ...] = ()
    eot_samples: int = 8  # checks.eot_samples: a randomized model attacked through fewer than 2 is flagged


@dataclass(frozen=True)
class AttackParams:
    """One attack at one budget, on images in shards of ``shard_size`` (batches never cross a shard)."""

    attack: str
    norm: str
    eps: float
    steps: int = 10
    step_size: float | None = None
    restarts: int = 1
    shard_size: int = 500
    crafting: Crafting = Crafting()
    keep_adv: bool = False  # store the adversarial images (the model is exported: they test the artefact)


@dataclass(frozen=True)
class EnsembleParams:
    norm: str
    eps: float
    settings: EnsembleSpec
    shard_size: int = 500
    crafting: Crafting = Crafting()
    attack: str = "ensemble"


@dataclass(frozen=True)
class ConvergeParams:
    """``check_more_steps`` of one attack cell (the ``reported`` input) at its budget."""

    attack: AttackParams
    more_steps_factor: int = 5
    more_restarts: int = 3
    tolerance: float = 0.05
    eval_size: int = 200


@dataclass(frozen=True)
class WorstCaseParams:
    norm: str
    eps: float
    attack: str = "worst_case"
    ensemble: EnsembleSpec | None = None


@dataclass(frozen=True)
class CertifyParams:
    """Randomized-smoothing certification; ``shard_size`` images per shard (each image has its own
    noise generator, so the shard size never changes a certificate and is not part of the id)."""

    sigma: float
    settings: CertifySpec
    shard_size: int = field(default=50, compare=False)


@dataclass(frozen=True)
class ChecksParams:
    eps: float
    settings: ChecksSpec
    step_size: float | None = None  # the reported linf PGD's own step at eps, if any
    crafting: Crafting = Crafting()


@dataclass(frozen=True)
class LatencyParams:
    settings: LatencySpec


@dataclass(frozen=True)
class ExportParams:
    settings: ExportSpec
    latency: LatencySpec
    direct_eps: tuple[float, ...] = ()  # linf budgets of the direct black-box attack on the export


def as_plain(value: Any) -> Any:
    """JSON-ready form of a parameter record (nested records and spec models as dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hidden = {f.name for f in dataclasses.fields(value) if not f.compare}
        return {f.name: as_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in hidden}
    if hasattr(value, "model_dump"):
        return as_plain(value.model_dump())
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in sorted(value.items())}
    if isinstance(value, tuple | list):
        return [as_plain(v) for v in value]
    return value


LABEL_KEYS = ("attack", "norm", "eps", "format", "precision")


@dataclass(frozen=True)
class Cell:
    """One measurement of one model. ``deps``: (role, label) of the cells of the same model it reads."""

    model: str
    kind: str
    params: Any  # the kind's parameter record (registered with the kind)
    deps: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        plain = as_plain(self.params)
        for nested in ("attack", "settings", "export"):  # a converge cell's attack, an export's settings
            if isinstance(plain.get(nested), dict):
                plain = {**plain, **plain[nested]}
        flat = plain
        args = ",".join(f"{k}={flat[k]}" for k in LABEL_KEYS if k in flat and not isinstance(flat[k], dict))
        return f"{self.kind}({args})" if args else self.kind

    def dep(self, role: str) -> str:
        """The label of the one input with ``role``."""
        found = [label for r, label in self.deps if r == role]
        if len(found) != 1:
            raise KeyError(f"{self.label}: {len(found)} inputs with role '{role}', expected 1")
        return found[0]

    def cell_id(self, model_key: str, data_fingerprint: str, seed: int, surrogate_key: str = "") -> str:
        """Content hash of the cell and what it depends on (the surrogate matters to ``checks`` only)."""
        inputs = (self.model, model_key, data_fingerprint, str(seed), surrogate_key if self.kind == "checks" else "")
        blob = json.dumps([CELL_FORMAT, self.kind, as_plain(self.params), inputs], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Shard:
    """Images ``[start, stop)`` of the eval split: the ``index``-th piece of a sharded cell."""

    index: int
    start: int
    stop: int


def shard_plan(n_images: int, shard_size: int) -> list[Shard]:
    """Consecutive shards of ``shard_size`` images (the last one shorter): a function of the cell
    only, never of how many workers run it."""
    size = max(1, shard_size)
    return [Shard(i, start, min(start + size, n_images)) for i, start in enumerate(range(0, max(n_images, 1), size))]


@dataclass
class CellResult:
    """What a cell (or one shard of it) produced: result rows; per-image arrays that later cells of
    the same model read (``mask``, ``adv``, certification records); and ``meta``, facts for the run
    manifest's model entry (check details, warnings), stored with the cell so the manifest can be
    rebuilt from the cells alone."""

    rows: list[Row]
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredCell:
    """A finished input cell as a dependant sees it: the cell (with its typed parameters) and its arrays."""

    cell: Cell
    arrays: Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Inputs:
    """A cell's inputs by role."""

    by_role: tuple[tuple[str, StoredCell], ...] = ()

    def one(self, role: str) -> StoredCell:
        found = self.many(role)
        if len(found) != 1:
            raise KeyError(f"{len(found)} inputs with role '{role}', expected 1")
        return found[0]

    def many(self, role: str) -> list[StoredCell]:
        return [stored for r, stored in self.by_role if r == role]


def merge_meta(into: dict[str, Any], meta: Mapping[str, Any]) -> None:
    """Merge a cell's ``meta`` into a manifest model entry: nested dicts are merged key by key."""
    for key, value in meta.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            merge_meta(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
