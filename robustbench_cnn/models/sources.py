"""Where an architecture comes from: a suite's ``arch`` string resolved to a factory.

Four forms:

- ``resnet`` -- a name registered in :data:`robustbench_cnn.models.MODELS` (built-ins, plugins);
- ``torchvision:NAME`` -- ``torchvision.models.get_model(NAME, weights=None, num_classes=K, **params)``,
  a classification model with random weights (nothing is ever downloaded);
- ``timm:NAME`` -- ``timm.create_model(NAME, pretrained=False, num_classes=K, in_chans=C, **params)``
  (timm is optional: ``pip install 'robustbench-cnn[timm]'``);
- ``pkg.module:factory`` -- a callable in a module imported from the suite's folder (``base_dir``)
  or the environment.

How the dataset's channels and classes reach the network is :func:`robustbench_cnn.models.build.adapt`'s
rule. Nothing here builds a network.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from robustbench_cnn.errors import RobustBenchError, SuiteError, UnknownNameError, did_you_mean
from robustbench_cnn.models.catalog import MODELS
from robustbench_cnn.registry import PluginError, import_object, load_plugins

TORCHVISION, TIMM = "torchvision:", "timm:"
# keyword arguments that would fetch pretrained weights: refused, weights come from a checkpoint
DOWNLOADING = frozenset({"weights", "weights_backbone", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
                         "progress", "checkpoint_path"})  # fmt: skip


class ModelSourceError(RobustBenchError, ValueError):
    """An ``arch`` names no buildable architecture, or its params do not fit it (exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Factory:
    """A resolved architecture. ``fn(**kwargs) -> nn.Module``; ``num_classes``/``in_channels`` are
    passed only where ``fn`` takes them; ``code_module`` is the module whose source identifies it."""

    arch: str
    kind: str  # registered | torchvision | timm | module
    fn: Callable[..., nn.Module]
    code_module: str
    takes_num_classes: bool
    takes_in_channels: bool
    fixed: Mapping[str, Any] = field(default_factory=dict)  # always passed, never from params

    def call(self, num_classes: int, in_channels: int, params: Mapping[str, Any]) -> nn.Module:
        kwargs = {**self.fixed, **params}
        if self.takes_num_classes:
            kwargs["num_classes"] = num_classes
        if self.takes_in_channels:
            kwargs["in_channels"] = in_channels
        return self.fn(**kwargs)


def _takes(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _torchvision(arch: str) -> Factory:
    import torchvision.models as tvm

    name = arch.removeprefix(TORCHVISION)
    names = tvm.list_models(module=tvm)  # classification models only
    if name not in names:
        raise UnknownNameError(f"unknown torchvision classification model '{name}'{did_you_mean(name, names)}")
    builder = tvm.get_model_builder(name)
    return Factory(arch, "torchvision", builder, builder.__module__, True, False, {"weights": None})


def _timm(arch: str) -> Factory:
    name = arch.removeprefix(TIMM)
    try:
        import timm
    except ImportError:
        raise ModelSourceError(
            f"arch '{arch}' needs timm, which is not installed; pip install 'robustbench-cnn[timm]'"
        ) from None
    if not timm.is_model(name):
        raise UnknownNameError(f"unknown timm model '{name}'{did_you_mean(name, timm.list_models())}")

    def create(num_classes: int, in_channels: int = 3, **params: Any) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **params)

    code_module = getattr(timm.models.model_entrypoint(name), "__module__", "timm")
    return Factory(arch, "timm", create, code_module, True, True)


def _module(arch: str, base_dir: Path | None) -> Factory:
    try:
        fn = import_object(arch, base_dir)
    except PluginError as exc:
        raise ModelSourceError(f"arch '{arch}': {exc}") from None
    if not callable(fn):
        raise ModelSourceError(f"arch '{arch}' is not callable; point it at a function returning an nn.Module")
    code_module = getattr(fn, "__module__", None) or arch.partition(":")[0]
    return Factory(arch, "module", fn, code_module, _takes(fn, "num_classes"), _takes(fn, "in_channels"))


def resolve(arch: str, base_dir: Path | None = None) -> Factory:
    """The factory ``arch`` names (see the module docstring); one-line errors for unknown names."""
    if arch.startswith(TORCHVISION):
        return _torchvision(arch)
    if arch.startswith(TIMM):
        return _timm(arch)
    if ":" in arch:
        return _module(arch, base_dir)
    fn = MODELS.get(arch)
    return Factory(arch, "registered", fn, fn.__module__, _takes(fn, "num_classes"), _takes(fn, "in_channels"))


def code_fingerprint(arch: str, plugins: tuple[str, ...] = (), base_dir: Path | None = None) -> str:
    """sha256 of the source of the module defining ``arch``'s factory and of each plugin module, so
    an edited factory (same parameters) gets a new cache key. A module without source (compiled,
    interactive) contributes its name and its package version."""
    modules = [resolve(arch, base_dir).code_module, *(p.partition(":")[0] for p in plugins)]
    h = hashlib.sha256()
    for name in modules:
        module = sys.modules.get(name)
        try:
            text = inspect.getsource(module) if module is not None else name
        except (OSError, TypeError):
            text = f"{name} {getattr(module, '__version__', '')}"
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:20]


def preload(data: Any, base_dir: Path, source: str) -> None:
    """Before a suite's arch names are validated: load its ``plugins`` and import the modules of its
    ``pkg.module:factory`` archs from ``base_dir``, so later lookups find them. Malformed values are
    left to validation; an unimportable plugin is a :class:`SuiteError` naming ``source``."""
    if not isinstance(data, dict):
        return
    plugins = data.get("plugins", ())
    if isinstance(plugins, list | tuple) and all(isinstance(p, str) for p in plugins):
        try:
            load_plugins(plugins, base_dir)
        except PluginError as exc:
            raise SuiteError(f"{source}: {exc}") from None
    models = data.get("models")
    for m in models if isinstance(models, list) else ():
        arch = m.get("arch") if isinstance(m, dict) else None
        if isinstance(arch, str) and ":" in arch and not arch.startswith((TORCHVISION, TIMM)):
            with contextlib.suppress(PluginError):  # reported with its field path by the arch check
                import_object(arch.partition(":")[0], base_dir)
