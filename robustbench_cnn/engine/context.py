"""What an executor sees: the run (:class:`RunContext`, frozen, the same on every worker) and the
model under test (:class:`ModelUnderTest`, one per model per process, with its per-process caches)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.contract.results import Row
from robustbench_cnn.data import ImageDataset
from robustbench_cnn.zoo import resolve_checkpoint


@dataclass(frozen=True)
class RunContext:
    """One run: its suite (settings resolved for the device), data, seed, device and directory."""

    spec: SuiteSpec
    base_dir: Path  # the suite's folder: relative paths in it resolve here
    run_id: str
    seed: int
    device: torch.device
    run_dir: Path
    data: ImageDataset
    progress: bool = True
    zoo_dir: Path | None = None  # where ``checkpoint = "zoo:NAME"`` files are found
    pinned_trained: frozenset[str] = frozenset()  # models this run trained in its pinned training process

    def checkpoint(self, mspec: ModelSpec) -> Path:
        """``mspec``'s checkpoint file: a verified zoo file, or a path relative to the suite's folder."""

        assert mspec.checkpoint is not None, "a model that trains has no checkpoint"
        return resolve_checkpoint(mspec.checkpoint, self.base_dir, self.zoo_dir, f"models '{mspec.name}'.checkpoint")

    def model(self, name: str) -> ModelSpec:
        """The suite's entry for model ``name``."""
        return next(m for m in self.spec.models if m.name == name)

    def row(self, mspec: ModelSpec) -> Callable[..., Row]:
        """A :class:`Row` factory with the run and model columns filled."""
        return partial(
            Row, run_id=self.run_id, suite=self.spec.name, dataset=self.data.name, model=mspec.name,
            arch=mspec.arch, defense=mspec.defense_name, compression=mspec.compression, device=self.device.type,
        )  # fmt: skip


@dataclass
class ModelUnderTest:
    """A prepared model (on the run's device, eval mode) and what cells read about it.

    ``info``: its manifest entry as prepared (``key``, ``final_train_acc``, ...), read-only;
    ``surrogate``: the transfer check's other model, if any. ``attacker`` and ``attack_batch`` are
    built on first use in this process (:func:`robustbench_cnn.measures.common.crafting_for`)."""

    spec: ModelSpec
    model: nn.Module
    info: Mapping[str, Any]
    surrogate: nn.Module | None = None
    surrogate_key: str = ""
    attacker: nn.Module | None = field(default=None, repr=False)
    attack_batch: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name
