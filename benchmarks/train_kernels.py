"""Device work per training step: ``train()`` against the plain loop a user writes, counted without a GPU.

On a GPU, small CNNs train launch-bound: a step costs about one kernel launch per operator, so the
operators a loop dispatches per step (and whether it waits for the device) predict its speed there.
This counts, with a ``TorchDispatchMode`` on the CPU, every ATen operator each loop dispatches per
step (views included) for the smoke suite's three architectures, with the same recipe on both sides
(SGD with Nesterov momentum and weight decay on conv/linear weights only, one-cycle schedule, no
augmentation, the multi-tensor optimizer step that CUDA selects, and without the CPU-only depthwise
weight-gradient patch), and the host synchronizations (``.item()``, ``float()``, ``nonzero``, copies
to the host) of each.

    python benchmarks/train_kernels.py          # prints one line per model: ops/step, ratio, syncs/epoch

It measures dispatch, not time: a GPU timing of the same pair is ``.gpu``-lease work (issue #11).
"""

from __future__ import annotations

import collections
import contextlib
import sys

import torch
import torch.nn.functional as F
import torch.optim.optimizer as torch_optimizer
from torch.utils._python_dispatch import TorchDispatchMode

from robustbench_cnn.config.spec import DatasetSpec, TrainSpec
from robustbench_cnn.data.base import load_dataset
from robustbench_cnn.models import build_model
from robustbench_cnn.train import loop

ARCHS = {
    "simple_cnn": ("simple_cnn", {"width": 16}),
    "resnet20": ("resnet", {"depth": 20}),
    "mobilenet_v2": ("mobilenet_v2", {"width_mult": 1.0, "small_input": False}),
}
SYNCS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.item.default"}
IMAGES, BATCH = 640, 64


class Dispatched(TorchDispatchMode):
    """Counts the operators dispatched, and those that would wait for a GPU (host reads of device data)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = collections.Counter[str]()
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        self.ops[name] += 1
        self.syncs += name in SYNCS
        return func(*args, **(kwargs or {}))


def _model(arch: str, params: dict, data) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(arch, data.num_classes, data.in_channels, data.mean, data.std, params)


def plain(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: TrainSpec) -> None:
    opt = loop.make_optimizer(model, recipe)
    sched = loop.make_scheduler(opt, recipe, len(y) // recipe.batch_size)
    model.train()
    for idx in torch.randperm(len(y)).split(recipe.batch_size):
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def main() -> int:
    torch_optimizer._default_to_fused_or_foreach = lambda params, differentiable, use_fused=False: (False, True)
    loop.fast_depthwise_grads = lambda model: contextlib.nullcontext(model)  # CPU-only: off, as on CUDA
    data = load_dataset(DatasetSpec(name="digits", image_size=16), None)
    x, y = data.x_train[:IMAGES], data.y_train[:IMAGES]
    recipe = TrainSpec(epochs=1, lr=0.05, batch_size=BATCH, augment="none")
    steps = IMAGES // BATCH
    for name, (arch, params) in ARCHS.items():
        first, second = _model(arch, params, data), _model(arch, params, data)
        with Dispatched() as base:
            plain(first, x, y, recipe)
        with Dispatched() as ours:
            loop.train(second, x, y, recipe, 0, "cpu", progress=False)
        b, o = base.ops.total() / steps, ours.ops.total() / steps
        sys.stdout.write(f"{name}: ops/step plain {b:.0f}, train() {o:.0f} ({o / b:.3f}x); host syncs per "
                         f"{steps}-step epoch: plain {base.syncs}, train() {ours.syncs}\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
