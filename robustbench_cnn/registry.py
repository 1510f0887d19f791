"""One small name -> factory registry per plugin kind (models, datasets, attacks, ...).

Built-in plugins live in modules that are imported only on the first lookup, so importing the
package (and ``robustbench-cnn --help``) stays instant. Third-party code registers with the
decorator::

    from robustbench_cnn.models import MODELS

    @MODELS.register("my_net")
    def my_net(num_classes: int, in_channels: int = 3) -> nn.Module: ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from robustbench_cnn.errors import UnknownNameError, did_you_mean

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """Maps names to factories; registering a name twice is an error."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._builtin_modules = builtin_modules
        self._loaded = False
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered by {self._entries[name].__module__}")
            self._entries[name] = fn
            return fn

        return decorator

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtin_modules:
                importlib.import_module(module)

    def get(self, name: str) -> T:
        self._load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}") from None

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
