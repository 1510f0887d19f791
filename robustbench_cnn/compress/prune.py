"""Structured channel pruning with Torch-Pruning's dependency graph (Fang et al., DepGraph, CVPR 2023).

Whole channels are removed from every coupled layer at once (a conv's filters, the BatchNorm after it,
the next conv's input channels, residual branches joined by an add), so the pruned model is a smaller
dense network that is faster on any runtime, unlike unstructured sparsity. The classifier's outputs
are never pruned. After pruning, the model is fine-tuned with the suite entry's ``train`` recipe and,
if it has one, its defense (e.g. ``pgd_at`` for adversarial fine-tuning; HYDRA, Sehwag et al. 2020,
shows robustness falls faster than clean accuracy when a robust model is pruned naively).

Threat model and tensor contract are the source model's: images ``(N, C, H, W)`` in [0, 1].
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from robustbench_cnn.compress import CompressJob, register_compressor
from robustbench_cnn.config.spec import CompressSpec
from robustbench_cnn.config.spec_types import MAX_IMAGES, MAX_ITEMS
from robustbench_cnn.models.structure import apply_structure, structure_of
from robustbench_cnn.train.loop import TrainLog

log = logging.getLogger(__name__)


class PruneSpec(CompressSpec):
    """Prune ``ratio`` of the channels of ``source`` (a model defined earlier), then fine-tune.

    ``ratio`` may be a list in the suite file: one model per ratio (a sweep). MACs fall roughly as
    (1 - ratio)^2: 0.3 halves them.
    """

    source: str = Field(min_length=1, description="the trained model to prune")
    ratio: float = Field(0.5, gt=0, lt=1, description="fraction of channels removed per layer (or globally)")
    importance: Literal["magnitude", "taylor", "lamp", "fpgm"] = Field(
        "magnitude", description="L2 norm of each channel group; taylor: |weight x gradient| on training data"
    )
    global_pruning: bool = Field(False, description="rank channels across layers instead of per layer")
    iterative_steps: int = Field(
        1, ge=1, le=MAX_ITEMS, description="prune in this many equal steps (importance re-scored)"
    )
    round_to: int | None = Field(None, ge=1, le=1024, description="keep channel counts multiples of this (SIMD width)")
    calibration_size: int = Field(256, ge=1, le=MAX_IMAGES, description="training images that score taylor importance")

    @property
    def upstream(self) -> tuple[str, ...]:
        return (self.source,)

    @property
    def label(self) -> str:
        return f"prune({self.importance},{self.ratio:g})"


def _importance(kind: str):
    import torch_pruning as tp

    return {
        "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "lamp": lambda: tp.importance.LAMPImportance(p=2),
        "fpgm": lambda: tp.importance.FPGMImportance(p=2),
    }[kind]()


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose outputs are the logits (never pruned)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]


def prune_channels(model: nn.Module, spec: PruneSpec, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    """Prune ``model`` (on the CPU, standard layout) in place. ``x``: calibration images ``(N, C, H, W)``
    in [0, 1] (a sample traces the graph; taylor scores use their loss gradient), ``y``: labels."""
    import torch_pruning as tp

    model.eval()
    pruner = tp.pruner.MetaPruner(
        model, x[:1], importance=_importance(spec.importance), pruning_ratio=spec.ratio,
        global_pruning=spec.global_pruning, iterative_steps=spec.iterative_steps,
        ignored_layers=classifier_layers(model, num_classes), round_to=spec.round_to,
    )  # fmt: skip
    for _ in range(spec.iterative_steps):
        if spec.importance == "taylor":
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
        pruner.step()
    model.zero_grad(set_to_none=True)


@register_compressor("prune", PruneSpec)
def prune(model: nn.Module, spec: PruneSpec, job: CompressJob) -> TrainLog:
    """Copy the source's weights into ``model``, prune its channels, fine-tune with the entry's recipe."""
    import torch_pruning as tp

    source = job.upstream[spec.source]
    state = source.state_dict()
    apply_structure(model, structure_of(source), {k: list(v.shape) for k, v in state.items()})  # may be pruned
    model.load_state_dict(state)
    model.to("cpu").to(memory_format=torch.contiguous_format)
    data = job.data
    gen = torch.Generator().manual_seed(job.seed)
    idx = torch.randperm(len(data.y_train), generator=gen)[: spec.calibration_size]
    sample = data.x_train[idx[:1]]
    macs0, params0 = tp.utils.count_ops_and_params(model, sample)
    prune_channels(model, spec, data.x_train[idx], data.y_train[idx], data.num_classes)
    macs1, params1 = tp.utils.count_ops_and_params(model, sample)
    log.info("pruned %s by %s: MACs %d -> %d (%.2fx fewer), params %d -> %d", spec.source, spec.label,
             macs0, macs1, macs0 / max(macs1, 1), params0, params1)  # fmt: skip
    return job.finetune(model)
