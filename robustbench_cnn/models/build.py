"""Build an architecture (any :mod:`~robustbench_cnn.models.sources` form) with its normalization layer,
and validate its parameters before anything is built.

Adapting a network to the dataset (the rule, applied after the factory returns): where the factory
does not take ``in_channels``, the first ``nn.Conv2d`` in module registration order is replaced by
a fresh one with the dataset's channels (same kernel, stride, padding, bias) if its
``in_channels`` differ; where it does not take ``num_classes``, the last ``nn.Linear`` is replaced
by a fresh one with the dataset's classes if its ``out_features`` differ. A network whose output
still has the wrong shape is refused by :func:`check_output`.
"""

from __future__ import annotations

import inspect
import itertools
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import ConfigDict, ValidationError, create_model
from torch import nn

from robustbench_cnn.errors import UnknownNameError, did_you_mean
from robustbench_cnn.models.normalize import Normalized
from robustbench_cnn.models.sources import DOWNLOADING, Factory, ModelSourceError, resolve

_FIXED = ("num_classes", "in_channels")
MAX_PARAMS = 250_000_000  # 1 GB of fp32 weights: the largest network a hand-built factory agrees to allocate
_STRICT = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _describe(annotation: Any) -> str:
    """``int in [1, 512]``-style text for an ``Annotated[int, Field(ge=1, le=512)]`` annotation."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Annotated else (annotation,)
    base = getattr(args[0], "__name__", str(args[0]))
    bounds = {}
    for meta in args[1:]:
        for item in getattr(meta, "metadata", [meta]):
            for op in ("ge", "gt", "le", "lt"):
                if getattr(item, op, None) is not None:
                    bounds[op] = getattr(item, op)
    lo = f"[{bounds['ge']}" if "ge" in bounds else (f"({bounds['gt']}" if "gt" in bounds else "")
    hi = f"{bounds['le']}]" if "le" in bounds else (f"{bounds['lt']})" if "lt" in bounds else "")
    if lo or hi:
        return f"{base} in {lo or '(-inf'}, {hi or 'inf)'}"
    return base


def _signature(factory: Factory) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    """(named parameters, takes **kwargs, resolved type hints with their Annotated metadata)."""
    try:
        params = dict(inspect.signature(factory.fn).parameters)
    except (TypeError, ValueError):
        return {}, True, {}
    try:
        hints = typing.get_type_hints(factory.fn, include_extras=True)
    except Exception:  # unresolvable annotations: names are still checked, types are not
        hints = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {k: p for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and k not in _FIXED}
    return named, var_kw, hints


def check_params(arch: str, params: Mapping[str, Any], base_dir: Path | None = None) -> None:
    """Validate ``params`` against the factory's signature and annotations before anything is built.

    Unknown names get a did-you-mean (:class:`UnknownNameError`); a value of the wrong type or out
    of its annotated range (``Annotated[int, Field(ge=1, le=...)]``, checked strictly: 2.0 is not
    an int) is a :class:`ModelSourceError` naming the parameter and what it takes.
    """
    factory = resolve(arch, base_dir)
    named, var_kw, hints = _signature(factory)
    for key in params:
        if key in _FIXED:
            raise ModelSourceError(f"params.{key}: set by the dataset, not by params; remove it")
        if key in DOWNLOADING and factory.kind in ("torchvision", "timm"):
            raise ModelSourceError(
                f"params.{key}: pretrained weights are never downloaded; remove it and set checkpoint = 'FILE'"
            )
        if key not in named and not var_kw:
            raise UnknownNameError(f"unknown parameter '{key}' for arch '{arch}'{did_you_mean(key, named)}")
    typed: dict[str, Any] = {k: (hints[k], ...) for k in params if k in named and k in hints}
    if not typed:
        return
    try:
        create_model("Params", __config__=_STRICT, **typed).model_validate({k: params[k] for k in typed})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0])
        raise ModelSourceError(
            f"params.{name} = {params[name]!r}: {err['msg']}; arch '{arch}' takes {name}: {_describe(hints[name])}"
        ) from None


def refuse_if_too_large(n_params: int, what: str) -> None:
    """For factories to call *before* allocating: ``ValueError`` if ``n_params`` exceeds :data:`MAX_PARAMS`."""
    if n_params > MAX_PARAMS:
        raise ValueError(f"{what} would have ~{n_params / 1e6:,.0f}M parameters (limit {MAX_PARAMS / 1e6:,.0f}M)")


def adapt(net: nn.Module, num_classes: int, in_channels: int) -> nn.Module:
    """Fit ``net`` to the dataset by the module docstring's rule (first Conv2d, last Linear)."""
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if convs and convs[0][1].in_channels != in_channels:
        name, conv = convs[0]
        if conv.groups != 1:
            raise ModelSourceError(f"cannot adapt grouped first conv '{name}' to {in_channels} input channels")
        new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]  # attributes typed wider than the arguments
                        bias=conv.bias is not None, padding_mode=conv.padding_mode)  # fmt: skip
        net.set_submodule(name, new)
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if linears and linears[-1][1].out_features != num_classes:
        name, fc = linears[-1]
        net.set_submodule(name, nn.Linear(fc.in_features, num_classes, bias=fc.bias is not None))
    return net


def check_output(model: nn.Module, num_classes: int, in_channels: int, image_size: int) -> None:
    """One forward of a zero batch ``(2, C, S, S)`` on the model's device, in eval mode, must give logits
    ``(2, num_classes)``; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.zeros(0)).device
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_channels, image_size, image_size, device=device))
    except Exception as exc:
        raise ModelSourceError(
            f"the model fails on {in_channels}x{image_size}x{image_size} images: {_first_line(exc)}; "
            "use a larger dataset.image_size or an architecture for small inputs"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelSourceError(f"the model returns {shape} for 2 images, not logits (2, {num_classes})")


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    params: Mapping[str, Any] | None = None,
    *,
    base_dir: Path | None = None,
    image_size: int | None = None,
) -> Normalized:
    """The architecture behind a normalization layer; takes images in [0, 1].

    ``params`` are validated (:func:`check_params`) before anything is built; ``image_size``, if
    given, runs :func:`check_output` on the result.
    """
    params = dict(params or {})
    check_params(arch, params, base_dir)
    factory = resolve(arch, base_dir)
    try:
        net = factory.call(num_classes, in_channels, params)
    except Exception as exc:
        raise ModelSourceError(f"arch '{arch}' with params {params} cannot be built: {_first_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise ModelSourceError(f"arch '{arch}' returned {type(net).__name__}, not a torch.nn.Module")
    model = Normalized(adapt(net, num_classes, in_channels), mean, std)
    if image_size is not None:
        check_output(model, num_classes, in_channels, image_size)
    return model
