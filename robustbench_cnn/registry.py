"""One small name -> factory registry per plugin kind (models, datasets, attacks, ...), and plugin loading.

Built-in plugins live in modules that are imported only on the first lookup, so importing the
package (and ``robustbench-cnn --help``) stays instant. Third-party code registers with the
decorator::

    from robustbench_cnn.models import MODELS

    @MODELS.register("my_net")
    def my_net(num_classes: int, in_channels: int = 3) -> nn.Module: ...

or lazily, without importing its module until the name is looked up:
``MODELS.register_lazy("my_net", "my_pkg.nets:my_net")``. Installed packages announce plugins in the
``robustbench_cnn.plugins`` entry-point group (a module, imported for its registrations, or a
callable taking no arguments); they are loaded once, on the first lookup in any registry. A suite
names its own plugin modules in ``plugins = ["my_models"]`` (:func:`load_plugins`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

from robustbench_cnn.errors import RobustBenchError, UnknownNameError, did_you_mean

T = TypeVar("T")

ENTRY_POINT_GROUP = "robustbench_cnn.plugins"
_entry_points_loaded = False


class PluginError(RobustBenchError, ValueError):
    """A plugin module or entry point cannot be imported or loaded (exit code 2)."""

    exit_code = 2


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@contextmanager
def search_path(base_dir: Path | None) -> Iterator[None]:
    """``base_dir`` first on ``sys.path`` while importing a suite's own modules (then removed)."""
    if base_dir is None:
        yield
        return
    entry = str(Path(base_dir).resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def import_object(target: str, base_dir: Path | None = None) -> ModuleType | object:
    """Import ``module`` or ``module:attr`` (the module from ``base_dir`` or the environment).

    Raises :class:`PluginError` with one line naming what could not be imported.
    """
    module_name, _, attr = target.partition(":")
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise PluginError(f"'{target}' is not a module path like 'my_models' or 'pkg.module:name'")
    where = f"{base_dir} or the environment" if base_dir is not None else "the environment"
    try:
        with search_path(base_dir):
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise PluginError(f"no module named '{module_name}' in {where}") from None
        raise PluginError(f"importing '{module_name}' failed: {_first_line(exc)}") from None
    except Exception as exc:  # a plugin's import-time error, reported as one line
        raise PluginError(f"importing '{module_name}' failed: {_first_line(exc)}") from None
    if not attr:
        return module
    try:
        obj: object = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise PluginError(f"module '{module_name}' has no attribute '{attr}'") from None
    return obj


def _load_entry_points() -> None:
    """Load every ``robustbench_cnn.plugins`` entry point once (a module, or a callable that is called)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, ModuleType):
                obj()
        except Exception as exc:
            raise PluginError(
                f"entry point '{ep.name}' ({ep.value}) of group {ENTRY_POINT_GROUP} failed: {_first_line(exc)}; "
                "fix or uninstall that package"
            ) from None


def load_plugins(names: Sequence[str], base_dir: Path | None = None) -> list[ModuleType]:
    """Import a suite's plugin modules (``"my_models"`` or ``"pkg.mod:register"``, whose callable is
    called), from ``base_dir`` (the suite's folder) or the environment; returns the modules."""
    modules: list[ModuleType] = []
    for i, name in enumerate(names):
        try:
            obj = import_object(name, base_dir)
            if not isinstance(obj, ModuleType):
                if not callable(obj):
                    raise PluginError(f"'{name}' is neither a module nor a callable")
                obj()
        except PluginError as exc:
            raise PluginError(f"plugins[{i}]: {exc}") from None
        except Exception as exc:
            raise PluginError(f"plugins[{i}]: '{name}' failed: {_first_line(exc)}") from None
        modules.append(sys.modules[name.partition(":")[0]])
    return modules


class Registry(Generic[T]):
    """Maps names to factories; registering a name twice is an error."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._builtin_modules = builtin_modules
        self._loaded = self._loading = False
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(fn: T) -> T:
            if name in self._entries or name in self._lazy:
                owner = self._entries[name].__module__ if name in self._entries else self._lazy[name]
                raise ValueError(f"{self.kind} '{name}' is already registered by {owner}")
            self._entries[name] = fn
            return fn

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``name`` as ``"module:attr"``, imported on the first lookup of that name."""
        if name in self._entries or name in self._lazy:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._lazy[name] = target

    def _load_builtins(self) -> None:
        """Import the built-in modules once. One that fails to import raises here on every lookup
        (not a misleading "unknown name" after the first): a broken install names its real cause."""
        if self._loaded or self._loading:  # _loading: a built-in module that looks up while importing
            return
        self._loading = True
        try:
            for module in self._builtin_modules:
                importlib.import_module(module)
            _load_entry_points()
            self._loaded = True
        finally:
            self._loading = False

    def get(self, name: str) -> T:
        self._load_builtins()
        if name in self._lazy:
            target = self._lazy.pop(name)  # the module may register ``name`` itself on import
            try:
                obj = import_object(target)
            except PluginError:
                self._lazy[name] = target
                raise
            self._entries.setdefault(name, obj)  # type: ignore[arg-type]
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}") from None

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


# What the suite schema (robustbench_cnn.config, the ground layer) asks of the layers built on it, named
# here as lazy ``module:attr`` strings so that the schema imports none of them: the registries it checks
# names against and the functions that check a model's arch and parameters. Every entry is resolved by a
# test (tests/test_registries.py), so a moved module fails there, not in a user's suite.
HOOKS = {
    "models": "robustbench_cnn.models.catalog:MODELS",
    "datasets": "robustbench_cnn.data.catalog:DATASETS",
    "attacks": "robustbench_cnn.attacks:ATTACKS",
    "defenses": "robustbench_cnn.defenses:DEFENSES",
    "compressors": "robustbench_cnn.compress:COMPRESSORS",
    "cell_kinds": "robustbench_cnn.engine.kinds:CELL_KINDS",
    "measures": "robustbench_cnn.engine.kinds:MEASURES",
    "resolve_arch": "robustbench_cnn.models.sources:resolve",
    "check_model_params": "robustbench_cnn.models.build:check_params",
    "preload_suite_plugins": "robustbench_cnn.models.sources:preload",
}


def hook(name: str) -> Any:
    """The object :data:`HOOKS` names (its module imported on first use)."""
    module, _, attr = HOOKS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def registry(name: str) -> Registry:
    """The registry :data:`HOOKS` names, e.g. ``registry("attacks")``."""
    found = hook(name)
    assert isinstance(found, Registry), f"{HOOKS[name]} is not a Registry"
    return found
