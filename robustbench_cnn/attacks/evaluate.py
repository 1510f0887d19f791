"""Robust accuracy of a model under one attack at one eps, with the threat model enforced."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from tqdm.auto import tqdm

from robustbench_cnn.attacks import Norm
from robustbench_cnn.attacks.crafting import DEFAULT_CRAFTING, Crafting, autotune_if, crafting_model
from robustbench_cnn.errors import AttackContractError
from robustbench_cnn.models.normalize import channels_last
from robustbench_cnn.seeds import derived_seed

TOLERANCE = 1e-5


def check_perturbation(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: Norm | str) -> None:
    """Raise :class:`AttackContractError` unless ``x_adv`` is finite, in [0, 1] and within eps of ``x``
    in ``norm`` (a :class:`Norm` or its value; anything else is a contract error, never a silent L2)."""
    try:
        norm = Norm(norm)
    except ValueError:
        raise AttackContractError(f"unknown norm '{norm}'; expected one of {', '.join(Norm)}") from None
    if not torch.isfinite(x_adv).all():
        raise AttackContractError("attack returned non-finite pixels")
    if x_adv.min() < 0 or x_adv.max() > 1:
        raise AttackContractError(f"attack left [0, 1]: pixel range [{x_adv.min():.4g}, {x_adv.max():.4g}]")
    delta = (x_adv - x).detach().flatten(1)
    size = delta.abs().amax(dim=1) if norm is Norm.LINF else delta.norm(p=2, dim=1)
    worst = float(size.max()) if len(size) else 0.0
    if worst > eps * (1 + TOLERANCE) + TOLERANCE:
        raise AttackContractError(f"attack left the {norm} ball: |delta| = {worst:.6g} > eps = {eps:.6g}")


@contextmanager
def frozen(model: nn.Module):
    """Parameters need no gradient while an attack differentiates w.r.t. the input only."""
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def robust_correct(
    model: nn.Module,
    make_attack,
    x: torch.Tensor,
    y: torch.Tensor,
    clean_correct: torch.Tensor,
    eps: float,
    norm: str,
    batch_size: int = 256,
    restarts: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    desc: str = "attack",
    progress: bool = True,
    adv_out: torch.Tensor | None = None,
    crafting: Crafting = DEFAULT_CRAFTING,
    attacker: nn.Module | None = None,
    index_offset: int = 0,
) -> torch.Tensor:
    """Boolean ``(N,)``: example i is clean-correct and the attack did not flip its prediction.

    Only clean-correct examples are attacked (RobustBench's convention), so robust accuracy can
    never exceed clean accuracy. With ``restarts > 1`` an example counts as robust only if every
    restart fails (per-example worst case, as torchattacks' MultiAttack). Each batch reseeds torch
    from (``seed``, its first image's index), so a batch's random starts do not depend on the batches
    before it (a resumed or sharded run draws the same ones; ``index_offset``: the index of ``x[0]``
    in the whole eval split, for a shard). ``eps = 0`` admits no
    perturbation, so the clean prediction stands. The model is evaluated in eval mode and left so.
    ``adv_out`` (same shape as ``x``), if given, receives the adversarial images: the one that fooled
    the model, else the last restart's; images not attacked keep their contents.

    The attack crafts its examples on ``attacker``, by default the module ``crafting`` describes
    (:mod:`robustbench_cnn.attacks.crafting`: a verified BatchNorm-folded copy, optionally in bf16
    or compiled, built from the first images attacked); whether an example fools the model is
    always decided by ``model`` itself, in fp32.
    """
    model.eval()
    result = clean_correct.clone()
    if eps == 0:
        return result
    idx = clean_correct.nonzero().flatten()
    if len(idx) == 0:
        return result
    if attacker is None:
        probe = idx[:8]
        with autotune_if(False):  # a one-off shape
            attacker = crafting_model(model, crafting, x[probe].to(device), y[probe].to(device), device)
    with frozen(model):  # only input gradients are needed
        for batch in tqdm(list(idx.split(batch_size)), desc=desc, disable=not progress, leave=False):
            torch.manual_seed(derived_seed(seed, index_offset + int(batch[0])))
            xb, yb = channels_last(x[batch].to(device)), y[batch].to(device)
            sink = None if adv_out is None else partial(_store_adversarial, adv_out, batch)
            result[batch] = _attack_batch(model, attacker, make_attack, xb, yb, eps, norm, restarts, desc,
                                          full=len(batch) == batch_size, sink=sink).cpu()  # fmt: skip
    return result


def _store_adversarial(adv_out: torch.Tensor, batch: torch.Tensor, live: torch.Tensor, x_adv: torch.Tensor) -> None:
    adv_out[batch[live.cpu()]] = x_adv.to(adv_out.device, memory_format=torch.contiguous_format)


def _attack_batch(model: nn.Module, attacker: nn.Module, make_attack, xb: torch.Tensor, yb: torch.Tensor, eps: float,
                  norm: str, restarts: int, desc: str, full: bool, sink=None) -> torch.Tensor:  # fmt: skip
    """Boolean ``(B,)`` on the batch's device: the image survived every restart (each restart attacks
    the survivors of the one before). ``full``: the batch has the run's batch size; cuDNN autotunes
    (where the run turned it on) only that shape and not the last batch's or the survivors' (each new
    shape costs seconds of timing). ``sink(live, x_adv)`` receives each restart's images."""
    still = torch.ones(len(yb), dtype=torch.bool, device=yb.device)
    for _ in range(restarts):
        live = still.nonzero().flatten()  # later restarts attack only the survivors
        if len(live) == 0:
            break
        with autotune_if(full and len(live) == len(yb)):
            x_adv = make_attack(attacker)(xb[live], yb[live]).detach()
            if model.training or attacker.training:
                raise AttackContractError(f"{desc} left the model in train mode")
            check_perturbation(xb[live], x_adv, eps, norm)
            if sink is not None:
                sink(live, x_adv)
            with torch.no_grad():
                still[live] = model(x_adv).argmax(1) == yb[live]
    return still
