"""The ``corruption`` measurement: accuracy under common corruptions (Hendrycks & Dietterich 2019), the
CIFAR-10-C set regenerated on the fly (:mod:`robustbench_cnn.corruptions`: deterministic, torch-free,
labelled "CIFAR-10-C-style, seed s", never the published files).

Suite table ``[corruptions]`` (its presence turns the measurement on)::

    [corruptions]
    corruptions = ["gaussian_noise", "defocus_blur", "fog", "jpeg_compression"]  # default: all 14
    severities = [1, 3, 5]            # default: 1..5
    eval_size = 1000                  # the first eval images (all if fewer)
    reference = "resnet20"            # the model mCE is relative to (leaderboard); default: none

Rows: ``corruption_acc`` per corruption (column ``attack``) and severity (column ``eps``), ``norm`` =
``corruption``, with 95% intervals; ``mean_corruption_acc`` over all of them. The mCE (CE_c = sum over
severities of the error / the reference's, averaged over corruptions) is computed by the leaderboard from
these rows. Cost: one forward pass per image, corruption and severity; generation is numpy on the CPU,
shared by every model of a process (a cache of at most :data:`CACHE_BYTES`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from pydantic import AfterValidator, Field

from robustbench_cnn.config.spec import ExportSpec, ModelSpec, SuiteSpec
from robustbench_cnn.config.spec_types import MAX_IMAGES, SpecBase
from robustbench_cnn.corruptions import CORRUPTIONS, SET_NAME, SEVERITIES, corrupt
from robustbench_cnn.engine.cells import Cell, CellResult, Inputs, Shard
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.kinds import cell_kind, register_measure
from robustbench_cnn.errors import did_you_mean, shown
from robustbench_cnn.export.gpu import TargetUnavailable
from robustbench_cnn.measures.common import predict_logits
from robustbench_cnn.measures.export import deployed_export

log = logging.getLogger(__name__)

NORM = "corruption"  # the rows' norm column: what kind of budget their eps (a severity) is
CACHE_BYTES = 512 << 20  # corrupted eval sets kept in memory per process (uint8)


def _known(name: str) -> str:
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {shown(name, 40)}{did_you_mean(name, CORRUPTIONS)}")
    return name


class CorruptionSettings(SpecBase):
    """``[corruptions]``: which corruptions, severities and images; the mCE reference model."""

    corruptions: tuple[Annotated[str, AfterValidator(_known)], ...] = Field(
        tuple(CORRUPTIONS), min_length=1, max_length=len(CORRUPTIONS), description="default: all 14 (no frost)"
    )
    severities: tuple[Annotated[int, Field(ge=1, le=5)], ...] = Field(SEVERITIES, min_length=1, max_length=5)
    eval_size: int = Field(1000, ge=1, le=MAX_IMAGES, description="the first eval images (all if fewer)")
    models: tuple[str, ...] | None = Field(None, description="the models measured; default: every model")
    exports: bool = Field(True, description="also each export of a measured model, on its own runtime")
    reference: str | None = Field(None, description="the model the leaderboard's mCE is relative to")

    def problems_in(self, suite: SuiteSpec) -> list[tuple[str, str]]:
        """Model names this table gives that the suite lacks (checked by the suite schema)."""
        names = {m.name for m in suite.models}
        asked = [("corruptions.models", n) for n in self.models or ()] + [("corruptions.reference", self.reference)]
        return [(where, f"no model named {shown(n, 80)}{did_you_mean(n, names)}") for where, n in asked
                if n is not None and n not in names]  # fmt: skip


@dataclass(frozen=True)
class CorruptionParams:
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    eval_size: int
    reference: str | None = None
    export: ExportSpec | None = None  # measure this export of the model (on its runtime), not the model


def _settings(spec: SuiteSpec, mspec: ModelSpec) -> CorruptionSettings | None:
    """The suite's ``[corruptions]`` where it measures this model, else ``None``."""
    s = spec.section("corruptions")
    return None if s is None or (s.models is not None and mspec.name not in s.models) else s


def _measured(export: ExportSpec) -> bool:
    """An export measured under corruptions: a CPU target (a GPU-only one is skipped by its own cell)."""
    return export.format != "aoti" and export.precision != "fp16"


def _estimate(spec: SuiteSpec, mspec: ModelSpec, n_eval: int) -> dict[str, int]:
    s = _settings(spec, mspec)
    if s is None:
        return {}
    exports = sum((ex.models is None or mspec.name in ex.models) and _measured(ex) for ex in spec.exports)
    variants = 1 + (exports if s.exports else 0)
    return {"corruptions": variants * min(s.eval_size, n_eval) * len(s.corruptions) * len(s.severities)}


@register_measure("corruptions", order=75, estimate=_estimate, settings=CorruptionSettings)
def plan_corruption(spec: SuiteSpec, mspec: ModelSpec, planned: Sequence[Cell]) -> list[Cell]:
    """One cell for the model and, with ``exports``, one per export of it (after that export's cell,
    which makes the file)."""
    s = _settings(spec, mspec)
    if s is None:
        return []
    params = CorruptionParams(s.corruptions, s.severities, s.eval_size, s.reference)
    cells = [Cell(mspec.name, "corruption", params)]
    for c in planned if s.exports else ():
        if c.kind == "export" and _measured(c.params.settings):
            export = dataclasses.replace(params, export=c.params.settings)
            cells.append(Cell(mspec.name, "corruption", export, (("export", c.label),)))
    return cells


def _predictor(
    ctx: RunContext, target: ModelUnderTest, p: CorruptionParams
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, dict[str, str]]:
    """Logits of the model (torch) or of its export (on the export's runtime) for float images in [0, 1];
    ``None`` for an export whose target this machine lacks (its export cell says so)."""
    batch = ctx.spec.eval_batch_size
    if p.export is None:
        return (lambda x: predict_logits(target.model, torch.from_numpy(x), batch, ctx.device).numpy()), {}
    try:
        deployed, fields = deployed_export(ctx, target, p.export)
    except TargetUnavailable:
        return None, {}
    return (lambda x: deployed.predict(x, batch)), fields


_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()


def corrupted(x: np.ndarray, key: tuple, name: str, severity: int, seed: int) -> np.ndarray:
    """``corrupt(x, ...)``, kept for the next model of this process while the cache has room."""
    found = _CACHE.get((key, name, severity, seed))
    if found is not None:
        _CACHE.move_to_end((key, name, severity, seed))
        return found
    out = corrupt(x, name, severity, seed)
    _CACHE[(key, name, severity, seed)] = out
    while sum(a.nbytes for a in _CACHE.values()) > CACHE_BYTES and len(_CACHE) > 1:
        _CACHE.popitem(last=False)
    return out


@cell_kind("corruption", CorruptionParams)
def corruption_cell(
    ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None
) -> CellResult:
    """Accuracy of the model on the first ``eval_size`` eval images under each corruption and severity."""
    p: CorruptionParams = cell.params
    data, row = ctx.data, ctx.row(target.spec)
    n = min(p.eval_size, len(data.y_eval))
    x, y = data.x_eval[:n].numpy(), data.y_eval[:n].numpy()
    predict, fields = _predictor(ctx, target, p)
    if predict is None:
        return CellResult([], {}, {})
    key = (ctx.data.fingerprint, n)
    rows, accs = [], []
    for name in p.corruptions:
        for severity in p.severities:
            images = corrupted(x, key, name, severity, ctx.seed).astype(np.float32) / 255
            acc = float((predict(images).argmax(1) == y).mean())
            accs.append(acc)
            rows.append(row(metric="corruption_acc", value=acc, attack=name, norm=NORM, eps=float(severity), n=n,
                            **fields))  # fmt: skip
    mean = float(np.mean(accs))
    rows.append(row(metric="mean_corruption_acc", value=mean, attack="mean", norm=NORM, n=n, **fields))
    log.info("%s%s: mean corruption accuracy %.4f (%d corruptions x %d severities, %d images)", target.name,
             f" {cell.label}" if p.export else "", mean, len(p.corruptions), len(p.severities), n)  # fmt: skip
    meta = {"corruptions": {"set": f"{SET_NAME}, seed {ctx.seed}", "images": n, "reference": p.reference}}
    return CellResult(rows, {}, meta)
