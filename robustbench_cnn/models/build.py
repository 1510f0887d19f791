"""Build a registered architecture with its normalization layer, and validate its parameters."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from robustbench_cnn.errors import UnknownNameError, did_you_mean
from robustbench_cnn.models.normalize import Normalized

_FIXED = ("num_classes", "in_channels")


def check_params(arch: str, params: Mapping[str, Any]) -> None:
    """Raise :class:`UnknownNameError` if ``params`` holds a keyword the architecture does not take."""
    from robustbench_cnn.models import MODELS

    accepted = [p for p in inspect.signature(MODELS.get(arch)).parameters if p not in _FIXED]
    for key in params:
        if key not in accepted:
            raise UnknownNameError(f"unknown parameter '{key}' for arch '{arch}'{did_you_mean(key, accepted)}")


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    params: Mapping[str, Any] | None = None,
) -> Normalized:
    """The named architecture behind a normalization layer; takes images in [0, 1]."""
    from robustbench_cnn.models import MODELS

    params = dict(params or {})
    check_params(arch, params)
    net: nn.Module = MODELS.get(arch)(num_classes=num_classes, in_channels=in_channels, **params)
    return Normalized(net, mean, std)
