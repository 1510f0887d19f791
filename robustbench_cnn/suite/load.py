"""Read a suite file and turn every problem into one line: file, field path, what is wrong."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from robustbench_cnn.errors import SuiteError, did_you_mean
from robustbench_cnn.suite.spec import SuiteSpec


@dataclass(frozen=True)
class LoadedSuite:
    spec: SuiteSpec
    path: Path  # absolute
    sha256: str

    @property
    def base_dir(self) -> Path:
        """Relative paths inside the suite resolve against the file's folder."""
        return self.path.parent

    def resolve(self, relative: str | None) -> Path | None:
        return None if relative is None else (self.base_dir / relative).resolve()


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The spec class that owns the last element of ``loc`` (to list its valid keys)."""
    cls: Any = SuiteSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        for arg in (ann, *getattr(ann, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                cls = arg
                break
        else:
            return None
    return cls


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc[:-1])
        hint = did_you_mean(str(loc[-1]), owner.model_fields) if owner else ""
        return f"{_field_path(loc)}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{_field_path(loc)}: required field is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{_field_path(loc)}: {msg}"


def parse_suite(data: dict[str, Any], source: str) -> SuiteSpec:
    try:
        return SuiteSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SuiteError(f"{source}: {_describe(errors[0])}{more}") from None


def load_suite(path: Path) -> LoadedSuite:
    """Parse and validate ``path``; raises :class:`SuiteError` with a one-line message."""
    path = Path(path).resolve()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite file ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: invalid TOML: {exc}") from None
    from robustbench_cnn.models.sources import preload

    preload(data, path.parent, str(path))  # plugins and pkg.module:factory archs, before arch names are validated
    return LoadedSuite(parse_suite(data, str(path)), path, hashlib.sha256(raw).hexdigest())
