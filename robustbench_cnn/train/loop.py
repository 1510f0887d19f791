"""Standard supervised training: seeded, with a one-cycle/cosine schedule and a progress bar."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from robustbench_cnn.config.spec import TrainSpec
from robustbench_cnn.models.normalize import as_layout, layout
from robustbench_cnn.train.augment import apply, draw
from robustbench_cnn.train.depthwise import fast_depthwise_grads

log = logging.getLogger(__name__)


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``(model, x, y) -> (loss, logits)``; called in train mode on an augmented batch."""

EpochEnd = Callable[[nn.Module, int], bool]
"""``(model, epoch) -> stop``; called after each epoch, may restore weights before asking to stop."""


def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    return loss_fn


@dataclass(frozen=True)
class TrainLog:
    epochs: int
    final_loss: float
    final_train_acc: float
    seconds: float


def to_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Move ``model`` to ``device`` in its memory format (channels_last where it may, see
    :func:`~robustbench_cnn.models.normalize.layout`), in place.

    Call it before building anything that records the model's device (torchattacks attacks read it
    from the first parameter when they are constructed)."""
    return model.to(device, memory_format=layout(model))  # type: ignore[call-overload]  # torch's stub lacks it


def make_optimizer(model: nn.Module, recipe: TrainSpec) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # no weight decay on BN and biases
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)


def make_scheduler(opt: torch.optim.Optimizer, recipe: TrainSpec, total_steps: int):
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=max(total_steps, 1))
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def _epoch_plan(n: int, recipe: TrainSpec, size: int, gen: torch.Generator) -> torch.Tensor:
    """int64 ``(n, 4)`` on the CPU: the epoch's shuffled image indices and each image's augmentation
    draws, in batches of ``recipe.batch_size`` rows (drawn batch by batch, in the order they are used:
    the same numbers on every device, and as when they were drawn step by step)."""
    perm = torch.randperm(n, generator=gen)
    draws = [draw(len(idx), recipe.augment, size, gen) for idx in perm.split(recipe.batch_size)]
    return torch.cat([perm[:, None], torch.cat(draws)], 1)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainSpec,
    seed: int,
    device: torch.device | str = "cpu",
    desc: str = "train",
    progress: bool = True,
    loss_fn: LossFn | None = None,
    on_epoch_end: EpochEnd | None = None,
) -> TrainLog:
    """Train ``model`` in place on images ``x`` (N, C, H, W) in [0, 1] and labels ``y`` (N,).

    ``loss_fn`` defaults to cross-entropy; defenses pass their own (adversarial, noisy, soft-label).
    Shuffling and augmentation draw from one ``torch.Generator`` seeded with ``seed``, and the
    global torch RNG (attack random starts, noise) is seeded with it too. Leaves the model in eval mode.
    """
    start = time.perf_counter()
    loss_fn = loss_fn or cross_entropy(recipe.label_smoothing)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    to_device(model, device).train()
    steps_per_epoch = -(-len(y) // recipe.batch_size)
    opt = make_optimizer(model, recipe)
    sched = make_scheduler(opt, recipe, recipe.epochs * steps_per_epoch)
    loss_val, acc = float("nan"), float("nan")
    bar = tqdm(range(recipe.epochs), desc=desc, disable=not progress, leave=False)
    epochs_run = 0
    x, y = x.to(device), y.to(device)  # once: batches are gathered where the model is
    fmt = layout(model)
    with fast_depthwise_grads(model):  # same gradients; avoids a slow oneDNN path on tiny feature maps
        for epoch in bar:
            plan = _epoch_plan(len(y), recipe, x.shape[-1], gen).to(device)  # one copy per epoch
            total_loss = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: one
            correct = torch.zeros((), dtype=torch.long, device=device)  # host sync per epoch, not per step
            for rows in plan.split(recipe.batch_size):
                idx = rows[:, 0]
                xb, yb = as_layout(apply(x[idx], recipe.augment, rows[:, 1:]), fmt), y[idx]
                loss, logits = loss_fn(model, xb, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total_loss += loss.detach() * len(idx)
                correct += (logits.argmax(1) == yb).sum()
            loss_val, acc = float(total_loss) / len(y), int(correct) / len(y)
            if not torch.isfinite(torch.tensor(loss_val)):
                raise FloatingPointError(f"{desc}: training loss is {loss_val}; lower train.lr")
            bar.set_postfix(loss=f"{loss_val:.3f}", acc=f"{acc:.3f}")
            epochs_run = epoch + 1
            if on_epoch_end is not None and on_epoch_end(model, epoch):
                log.info("%s: stopped early after epoch %d", desc, epochs_run)
                break
            model.train()
    model.eval()
    seconds = time.perf_counter() - start
    log.info("%s: %d epochs in %.1fs, loss %.4f, train acc %.4f", desc, epochs_run, seconds, loss_val, acc)
    return TrainLog(epochs_run, loss_val, acc, seconds)
