"""The ``certify`` cell: certified accuracy of a randomized-smoothing model (Cohen et al. 2019).

Sharded by image range: each image draws its noise from its own generator, seeded by (run seed,
image index), so a certificate does not depend on the shard or worker that computed it. Each shard
keeps one record per image, as Cohen et al.'s ``certify.py`` writes (``label``, ``prediction``,
``radius``, ``p_lower``, ``count``: the top class's samples of n, and ``seconds``); the merge
concatenates them and recomputes certified accuracy, abstain rate and seconds per image from them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.defenses.smoothing import ABSTAIN, Smoothed
from robustbench_cnn.engine.cells import Cell, CellResult, CertifyParams, Inputs, Shard
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.kinds import cell_kind, register_measure
from robustbench_cnn.seeds import derived_seed

log = logging.getLogger(__name__)

RECORDS = ("label", "prediction", "radius", "p_lower", "count", "seconds")


def _estimate(spec: SuiteSpec, mspec: ModelSpec, n_eval: int) -> dict[str, int]:
    sigma = getattr(mspec.defense, "sigma", None)
    return {"certify": min(spec.certify.eval_size, n_eval) * (spec.certify.n0 + spec.certify.n) if sigma else 0}


@register_measure("certify", order=40, estimate=_estimate)
def plan_certify(spec: SuiteSpec, mspec: ModelSpec, planned: Sequence[Cell]) -> list[Cell]:
    """A model trained under Gaussian noise (its defense has a ``sigma``) is certified at that sigma."""
    sigma = getattr(mspec.defense, "sigma", None)
    if sigma is None:
        return []
    return [Cell(mspec.name, "certify", CertifyParams(float(sigma), spec.certify, spec.performance.certify_shard_size))]


def _images(ctx: RunContext, cell: Cell) -> int:
    return min(cell.params.settings.eval_size, len(ctx.data.y_eval))


def _shard_size(cell: Cell) -> int:
    return cell.params.shard_size


def _merge(ctx: RunContext, mspec: ModelSpec, cell: Cell, inputs: Inputs, parts: list[CellResult]) -> CellResult:
    """``certified_acc`` at each radius: certified, correct and radius >= r."""

    p: CertifyParams = cell.params
    cfg = p.settings
    records = {name: torch.cat([part.arrays[name] for part in parts]) for name in RECORDS}
    y, labels, radii = records["label"], records["prediction"], records["radius"]
    abstain = float((labels == ABSTAIN).float().mean())
    fast = all(part.meta.get("fast_precision_verified", True) for part in parts)
    meta = {"certify": {
        "sigma": p.sigma, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha, "images": len(y), "runtime": cfg.runtime,
        "batch_size": cfg.batch_size, "precision": cfg.precision if fast else "fp32", "abstain_rate": abstain,
        "seconds_per_image": round(float(records["seconds"].sum()) / max(len(y), 1), 4),
    }}  # fmt: skip
    row = ctx.row(mspec)
    rows = [row(metric="certified_acc", value=float(((labels == y) & (radii >= r)).float().mean()),
                attack="smoothing", norm="l2", eps=r, n=len(y)) for r in cfg.radii]  # fmt: skip
    log.info("%s: certified accuracy at radius 0: %.3f (abstain %.3f)", mspec.name, rows[0].value, abstain)
    return CellResult(rows, records, meta)


@cell_kind("certify", CertifyParams, merge=_merge, images=_images, shard_size=_shard_size)
def certify_cell(
    ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None
) -> CellResult:
    """Certify images ``[shard.start, shard.stop)``: one record per image."""

    assert shard is not None, "certify cells run by shard"
    p: CertifyParams = cell.params
    cfg = p.settings  # resolved for the device: runtime and batch size are concrete
    assert cfg.batch_size is not None, "certify settings are resolved for the device (device_defaults)"
    x = ctx.data.x_eval[shard.start : shard.stop].to(ctx.device)
    smoothed = Smoothed(target.model, ctx.data.num_classes, p.sigma, cfg.batch_size, cfg.runtime, cfg.precision,
                        cfg.compile)  # fmt: skip
    probe = ctx.data.x_eval[0].to(ctx.device)  # the same probe for every shard: the same decision
    verified = smoothed.verify_fast(probe, cfg.n, derived_seed(ctx.seed, "certify-probe"), cfg.count_tolerance)
    certs, seconds = [], []
    bar = tqdm(list(enumerate(x, start=shard.start)), desc=f"certify {target.name}", disable=not ctx.progress,
               leave=False)  # fmt: skip
    for i, xi in bar:
        start = time.perf_counter()
        gen = torch.Generator(device=ctx.device).manual_seed(derived_seed(ctx.seed, "certify", i))
        certs.append(smoothed.certify(xi, cfg.n0, cfg.n, cfg.alpha, gen))
        seconds.append(time.perf_counter() - start)
    records = {"label": ctx.data.y_eval[shard.start : shard.stop].clone(),
               "prediction": torch.tensor([c.label for c in certs], dtype=torch.int64),
               "radius": torch.tensor([c.radius for c in certs], dtype=torch.float64),
               "p_lower": torch.tensor([c.p_lower for c in certs], dtype=torch.float64),
               "count": torch.tensor([c.count for c in certs], dtype=torch.int64),
               "seconds": torch.tensor(seconds, dtype=torch.float64)}  # fmt: skip
    return CellResult([], records, {"fast_precision_verified": verified})
