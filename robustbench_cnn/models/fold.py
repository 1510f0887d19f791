"""BatchNorm folding: an eval-mode copy of a model with each BatchNorm merged into the conv before it.

In eval mode a BatchNorm is an affine map per channel, so folding it into the conv that feeds it
gives the same function up to float rounding, without BatchNorm's memory-bound forward and
backward passes: PGD steps run 1.3-1.8x faster on the smoke models on CPU.

The copy keeps the model's own Python code: torch.fx only *finds* the conv -> BatchNorm pairs
(each module called once, the conv's output read only by the BatchNorm, no parameter used
elsewhere); the copy is a deep copy whose convs get the folded weights and whose folded
BatchNorms become ``nn.Identity``. Whatever else the forward does (custom autograd functions,
randomness, input transformations) runs unchanged, so the copy masks gradients exactly when the
model does. It is verified before use, never trusted: on a few probe images its logits, and with
``labels`` its input gradients of the cross-entropy loss, must match the model's; otherwise the
model itself is used. Attacks only *craft* examples on the copy; the verdict (is the prediction
still right?) always comes from the model itself.
"""

from __future__ import annotations

import copy as copying
import logging
import weakref
from collections import Counter
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from robustbench_cnn.models.normalize import as_layout, layout

log = logging.getLogger(__name__)

LOGIT_RTOL, LOGIT_ATOL = 1e-3, 1e-4
GRAD_RTOL = 1e-3  # relative L2 error of the folded copy's input gradient, per probe image

# model -> (its state when folded, the folded copy or None when folding was refused); never holds the model
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module | None]] = weakref.WeakKeyDictionary()


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _input_grad(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels, reduction="sum"), x)
    return grad.flatten(1)


def same_function(copy: nn.Module, model: nn.Module, probe: torch.Tensor, labels: torch.Tensor | None) -> bool:
    """``copy`` matches ``model`` on ``probe`` (N, C, H, W): logits, and input gradients if ``labels``."""
    probe = as_layout(probe, layout(model))
    with torch.inference_mode():
        if not torch.allclose(copy(probe), model(probe), rtol=LOGIT_RTOL, atol=LOGIT_ATOL):
            return False
    if labels is None:
        return True
    with torch.enable_grad():
        g_copy, g_model = _input_grad(copy, probe, labels), _input_grad(model, probe, labels)
    error = (g_copy - g_model).norm(dim=1)
    return bool((error <= GRAD_RTOL * g_model.norm(dim=1) + 1e-12).all())


def _state(model: nn.Module, probe: torch.Tensor, checks_gradients: bool) -> tuple:
    """What the folded copy depends on: every tensor's storage and in-place version (an optimizer
    step or ``load_state_dict`` bumps it), the probe's device, and whether gradients were checked."""
    tensors = [*model.parameters(), *model.buffers()]
    return (probe.device, checks_gradients, tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in tensors))


def folded(model: nn.Module, probe: torch.Tensor, labels: torch.Tensor | None = None) -> nn.Module:
    """An eval-mode, BatchNorm-folded copy of ``model`` with frozen parameters, channels_last where
    :func:`~robustbench_cnn.models.normalize.layout` allows.

    ``probe``: a few images ``(N, C, H, W)`` in [0, 1] on the model's device; ``labels`` ``(N,)``
    (optional) also checks the input gradients, as attacks need. ``model`` itself is returned if
    it has no BatchNorm, is in train mode (batch statistics cannot be folded), cannot be traced by
    torch.fx (which finds the conv -> BatchNorm pairs), has no foldable pair, or if the copy does
    not match it on the probe (a copy whose logits or gradients differ is never used). The result is cached per
    model until any of its parameters or buffers changes, so the many attacks of one model fold
    it once.
    """
    if model.training or not has_batchnorm(model):
        return model
    state = _state(model, probe, labels is not None)
    cached = _CACHE.get(model)
    if cached is None or cached[0] != state:
        cached = (state, _fold(model, probe, labels))
        _CACHE[model] = cached
    return model if cached[1] is None else cached[1]


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv, batchnorm)`` submodule names whose folding cannot change anything else: found by
    tracing with torch.fx, each module called exactly once, the conv's output read only by the
    BatchNorm, and neither module's parameters read outside its own call."""
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls = Counter(str(n.target) for n in graph.nodes if n.op == "call_module")  # module/attr targets are names
    attrs = [str(n.target) for n in graph.nodes if n.op == "get_attr"]

    def private(name: str) -> bool:
        return calls[name] == 1 and not any(a.startswith(name + ".") for a in attrs)

    pairs = []
    for node in graph.nodes:
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or len(node.args) != 1:
            continue
        prev = node.args[0]
        if not isinstance(prev, torch.fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        conv, norm = str(prev.target), str(node.target)
        if isinstance(modules.get(conv), nn.Conv2d) and private(conv) and private(norm):
            pairs.append((conv, norm))
    return pairs


def _fold(model: nn.Module, probe: torch.Tensor, labels: torch.Tensor | None) -> nn.Module | None:
    try:
        pairs = foldable_pairs(model)
        if not pairs:
            return None
        copy = copying.deepcopy(model)
        for conv, bn in pairs:
            pair = cast(nn.Conv2d, copy.get_submodule(conv)), cast(nn.BatchNorm2d, copy.get_submodule(bn))
            copy.set_submodule(conv, fuse_conv_bn_eval(*pair))
            copy.set_submodule(bn, nn.Identity())
        copy = copy.to(memory_format=layout(copy)).eval().requires_grad_(False)
        same = same_function(copy, model, probe, labels)
    except Exception as exc:  # any model fx cannot trace or run is used as it is
        log.debug("not folding BatchNorm of %s: %s", type(model).__name__, exc)
        return None
    if not same:
        log.debug("not folding BatchNorm of %s: the folded copy differs on the probe", type(model).__name__)
    return copy if same else None
