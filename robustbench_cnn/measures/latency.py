"""The ``latency`` measurement: torch eager latency percentiles, spread and throughput per batch size
(raw per-call samples in the run's ``latency_samples/``); :func:`latency_rows` turns any runtime's
latency stats into rows (exports and deployed artefacts use it too)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.contract.results import Row
from robustbench_cnn.engine.cells import Cell, CellResult, Inputs, LatencyParams, Shard
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.kinds import cell_kind, register_measure
from robustbench_cnn.runtime.samples import SampleKey, samples_dir, write_samples
from robustbench_cnn.runtime.torch_runtime import torch_latency


@register_measure("latency", order=60)
def plan_latency(spec: SuiteSpec, mspec: ModelSpec, planned: Sequence[Cell]) -> list[Cell]:
    return [Cell(mspec.name, "latency", LatencyParams(spec.latency))] if spec.latency.enabled else []


def latency_rows(row: Callable[..., Row], stats, samples_dir: Path | None = None, **fields) -> list[Row]:
    """p50/p90/p99 latency, spread (IQR, std) and throughput rows per batch size, from the latency
    harness's stats; with ``samples_dir``, each batch size's raw per-call timings are stored there too
    (:mod:`robustbench_cnn.runtime.samples`), keyed like its rows."""
    rows = []
    for s in stats:
        cell = [
            row(metric=metric, value=value, n=s.repeats, batch_size=s.batch_size, **fields)
            for metric, value in (("latency_ms_p50", s.p50_ms), ("latency_ms_p90", s.p90_ms),
                                  ("latency_ms_p99", s.p99_ms), ("latency_ms_iqr", s.iqr_ms),
                                  ("latency_ms_std", s.std_ms), ("throughput", s.throughput))
        ]  # fmt: skip
        if samples_dir is not None and s.samples_ms is not None:
            r = cell[0]
            write_samples(samples_dir, SampleKey(r.model, r.format, r.runtime, r.compression, s.batch_size),
                          s.samples_ms, s.waited_ms)  # fmt: skip
        rows += cell
    return rows


@cell_kind("latency", LatencyParams, resources="node")
def latency_cell(
    ctx: RunContext, target: ModelUnderTest, cell: Cell, inputs: Inputs, shard: Shard | None
) -> CellResult:
    """Torch eager latency percentiles, spread and throughput per batch size (raw samples in the run's
    ``latency_samples/``)."""
    lat, shape = cell.params.settings, tuple(ctx.data.x_eval.shape[1:])
    stats = torch_latency(
        target.model, shape, lat.batch_sizes, ctx.device, lat.warmup, lat.min_repeats, lat.budget_s, ctx.seed
    )
    return CellResult(latency_rows(ctx.row(target.spec), stats, samples_dir(ctx.run_dir)))
