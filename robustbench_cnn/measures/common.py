"""What the measurement modules share: logits on the eval images, the model an attack crafts on (built
once per model and process) and its batch size, the shipped weights' size, and check results as
manifest facts."""

from __future__ import annotations

import logging

import torch
from torch import nn

from robustbench_cnn.attacks.preflight import attacker_for
from robustbench_cnn.engine.context import ModelUnderTest, RunContext
from robustbench_cnn.engine.devices import fitting_batch
from robustbench_cnn.engine.plan import crafting
from robustbench_cnn.train.cache import weights_bytes

log = logging.getLogger(__name__)


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits ``(N, K)`` on the CPU for images ``x`` in [0, 1], in eval + inference mode."""
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(xb.to(device)).float().cpu() for xb in x.split(batch_size)])


def seeded_logits(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device, seed: int) -> torch.Tensor:
    """:func:`predict_logits` with torch's generator seeded by ``seed`` (and restored after): a
    randomized model's clean predictions are then a function of the run's seed, the same in a suite
    run and in :func:`robustbench_cnn.api.evaluate`; a deterministic model's are unchanged."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return predict_logits(model, x, batch_size, device)


def weights_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's fp32 safetensors file, as it would be shipped (serialized in memory)."""
    return len(weights_bytes(model))


def crafting_for(ctx: RunContext, target: ModelUnderTest) -> nn.Module:
    """The module this model's attacks craft on: built once per model and process, verified on the
    first eval images; an EOT wrapper if two identical forward passes differ (Athalye et al. 2018)."""
    if target.attacker is None:
        data = ctx.data
        probe_x, probe_y = data.x_eval[:8].to(ctx.device), data.y_eval[:8].to(ctx.device)
        target.attacker = attacker_for(target.model, crafting(ctx.spec), probe_x, probe_y, ctx.device,
                                       ctx.spec.checks.eot_samples, target.name)  # fmt: skip
    return target.attacker


def attack_batch(ctx: RunContext, target: ModelUnderTest) -> int:
    """Images per attack batch for this model: the suite's ``attack_batch_size``, else what fits the device."""
    if ctx.spec.performance.attack_batch_size is not None:
        return ctx.spec.performance.attack_batch_size
    if target.attack_batch is None:
        shape = tuple(ctx.data.x_eval.shape[1:])
        target.attack_batch = fitting_batch(target.model, shape, ctx.device, ctx.spec.eval_batch_size)
    return target.attack_batch


def checks_meta(target: ModelUnderTest, results: dict, decides: bool = True) -> dict:
    """Check results (``{name: CheckResult}``) as manifest facts; warns on failures. ``decides=False``:
    an attack's own convergence, which the worst case at its budget may supersede (logged as such)."""
    for name, r in results.items():
        if r.passed:
            continue
        if decides:
            log.warning("%s: sanity check %s failed (%s): evaluation unreliable", target.name, name, r.detail)
        else:
            log.info("%s: %s not converged (%s); the worst case at this budget decides the verdict", target.name,
                     name, r.detail)  # fmt: skip
    return {"checks": {name: {"passed": r.passed, "detail": r.detail} for name, r in results.items()}}
