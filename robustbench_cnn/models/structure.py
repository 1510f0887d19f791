"""The channel structure of a (possibly pruned) model, stored beside its weights instead of a pickle.

Structured pruning changes layer widths, so a pruned model no longer matches the module its suite
entry builds. Rather than pickling the module, the checkpoint's safetensors metadata records each
layer's width attributes (``structure_of``); loading rebuilds the dense model, narrows those layers
and their tensors to the stored shapes (``apply_structure``), then loads the weights strictly.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from robustbench_cnn.errors import shown

_ATTRS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (nn.Conv2d, ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    (nn.modules.batchnorm._BatchNorm, ("num_features",)),
    (nn.GroupNorm, ("num_channels", "num_groups")),
)
METADATA_KEY = "structure"
STRUCTURAL = frozenset(a for _, attrs in _ATTRS for a in attrs)  # the only attributes a checkpoint may set
MAX_WIDTH = 1 << 20  # channels/features of one layer; wider is a damaged or hostile checkpoint


def check_structure(structure: dict[str, dict[str, int]]) -> None:
    """Metadata is data, never behaviour: only the width attributes of :data:`_ATTRS`, each an integer
    in [1, :data:`MAX_WIDTH`]. Raises ``ValueError`` naming the first offending entry (escaped)."""
    for name, attrs in structure.items():
        for attr, value in attrs.items():
            if attr not in STRUCTURAL:
                raise ValueError(f"layer {shown(name, 80)}: {shown(attr, 80)} is not a width attribute "
                                 f"({', '.join(sorted(STRUCTURAL))})")  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WIDTH:
                raise ValueError(f"layer {shown(name, 80)}: {attr} = {shown(value, 40)} is not an integer in "
                                 f"[1, {MAX_WIDTH}]")  # fmt: skip


def structure_of(model: nn.Module) -> dict[str, dict[str, int]]:
    """``{module name: {width attribute: value}}`` for every conv, linear and norm layer."""
    out: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        for cls, attrs in _ATTRS:
            if isinstance(module, cls):
                out[name] = {a: int(getattr(module, a)) for a in attrs}
    return out


def dumps(model: nn.Module) -> str:
    return json.dumps(structure_of(model), sort_keys=True, separators=(",", ":"))


def apply_structure(model: nn.Module, structure: dict[str, dict[str, int]], shapes: dict[str, list[int]]) -> None:
    """Narrow ``model`` in place to ``structure``; ``shapes`` maps state-dict keys to stored shapes.

    Raises ``ValueError`` naming the first layer the structure does not describe, or an attribute that
    is not a width of that layer's kind (see :func:`check_structure`).
    """
    check_structure(structure)
    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        if name not in modules:
            raise ValueError(f"structure names layer {shown(name, 80)}, which the model does not have")
        module = modules[name]
        allowed = next((a for cls, a in _ATTRS if isinstance(module, cls)), ())
        for attr, value in attrs.items():
            if attr not in allowed:
                raise ValueError(f"layer {shown(name, 80)} ({type(module).__name__}) has no width attribute "
                                 f"{shown(attr, 80)}")  # fmt: skip
            setattr(module, attr, value)
        prefix = f"{name}." if name else ""
        for tensors in (module._parameters, module._buffers):
            for key, tensor in tensors.items():
                shape = shapes.get(prefix + key)
                if tensor is None or shape is None or list(tensor.shape) == list(shape):
                    continue
                empty = torch.empty(shape, dtype=tensor.dtype, device=tensor.device)
                tensors[key] = nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
