"""Read a suite file and report every problem in it, one line each: file, field path, what is wrong.

The boundary between a suite file and the rest of the tool: a file that is missing, looping,
not a regular file, larger than 1 MiB, not UTF-8 TOML, nested deeper than 32 levels, or not a valid
:class:`SuiteSpec` raises :class:`SuiteError` (exit code 2) listing all of its problems (up to 50).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from robustbench_cnn.config.problems import problem_lines
from robustbench_cnn.config.spec import SuiteSpec
from robustbench_cnn.errors import RobustBenchError, SuiteError, shown
from robustbench_cnn.registry import hook
from robustbench_cnn.zoo import ZooError, is_zoo, resolve_checkpoint

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_SHOWN_PROBLEMS = 50


@dataclass(frozen=True)
class LoadedSuite:
    spec: SuiteSpec
    path: Path  # absolute
    sha256: str
    zoo_dir: Path | None = None  # where ``checkpoint = "zoo:NAME"`` files are found (absolute)

    @property
    def base_dir(self) -> Path:
        """Relative paths inside the suite resolve against the file's folder."""
        return self.path.parent

    def resolve(self, relative: str | None) -> Path | None:
        return None if relative is None else (self.base_dir / relative).resolve()

    def checkpoint(self, i: int) -> Path | None:
        """Model ``i``'s checkpoint file (a zoo entry's verified file), or None if it trains."""
        m = self.spec.models[i]
        if m.checkpoint is None:
            return None
        return resolve_checkpoint(m.checkpoint, self.base_dir, self.zoo_dir, f"{self.path}: models[{i}].checkpoint")


def parse_suite(data: dict[str, Any], source: str) -> SuiteSpec:
    """Validate parsed TOML; raises :class:`SuiteError` listing every problem as ``source: field: problem``."""
    depth = _depth(data)
    if depth > MAX_DEPTH:
        raise SuiteError(f"{source}: values nest {depth} levels deep; a suite needs at most {MAX_DEPTH}")
    try:
        return SuiteSpec.model_validate(data)
    except ValidationError as exc:
        lines = problem_lines(exc.errors(), SuiteSpec)
    except RobustBenchError as exc:  # a plugin's own check, outside any field
        lines = [str(exc)]
    if len(lines) > MAX_SHOWN_PROBLEMS:
        lines = [*lines[:MAX_SHOWN_PROBLEMS], f"... and {len(lines) - MAX_SHOWN_PROBLEMS} more problems"]
    raise SuiteError(*(f"{source}: {line}" for line in lines))


def _depth(data: Any) -> int:
    """Nesting depth of parsed TOML, without recursion (dotted keys nest without brackets)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        deepest = max(deepest, level)
        if level <= MAX_DEPTH and isinstance(value, dict | list):
            stack += [(v, level + 1) for v in (value.values() if isinstance(value, dict) else value)]
    return deepest


def bracket_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting outside TOML strings and comments: checked before parsing, as
    Python's TOML parser recurses once per level (a few thousand levels crash it)."""
    deepest = depth = 0
    for token in _tokens(text):
        depth += 1 if token in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _tokens(text: str) -> Iterator[str]:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                i += 2 if c == '"' and text[i] == "\\" else 1
            i += len(quote)
        else:
            if c in "[]{}":
                yield c
            i += 1


def _read(path: Path) -> bytes:
    """At most ``MAX_BYTES + 1`` bytes of a regular file (never a FIFO or a device: opened without
    blocking, so a FIFO with no writer is refused instead of waited on forever)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise IsADirectoryError(21, "not a regular file")
        return fh.read(MAX_BYTES + 1)


def load_suite(path: Path, zoo_dir: Path | None = None) -> LoadedSuite:
    """Parse and validate ``path``; raises :class:`SuiteError` with one line per problem. ``zoo_dir``:
    where zoo checkpoints are (absolute; see :func:`robustbench_cnn.zoo.zoo_dir`); each is verified."""
    try:
        path = Path(path).resolve()
        raw = _read(path)
    except (OSError, RuntimeError, ValueError) as exc:  # missing, unreadable, a symlink loop, a NUL in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SuiteError(f"{path}: cannot read suite file ({reason})") from None
    if len(raw) > MAX_BYTES:
        raise SuiteError(f"{path}: suite file is larger than {MAX_BYTES >> 20} MiB; is it the right file?")
    try:
        text = raw.decode("utf-8")
        depth = bracket_depth(text)
        if depth > MAX_DEPTH:
            raise SuiteError(f"{path}: arrays or tables nest {depth} levels deep; a suite needs at most {MAX_DEPTH}")
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # a nesting the scan above miscounted (e.g. odd multi-line string quoting)
        raise SuiteError(f"{path}: arrays or tables nest too deep; a suite needs at most {MAX_DEPTH} levels") from None
    hook("preload_suite_plugins")(
        data, path.parent, str(path)
    )  # plugins and pkg.module:factory archs, before arch names are validated
    loaded = LoadedSuite(parse_suite(data, str(path)), path, hashlib.sha256(raw).hexdigest(), zoo_dir)
    missing = []
    for i, m in enumerate(loaded.spec.models):
        try:
            file = loaded.checkpoint(i)
        except ZooError as exc:
            missing.append(str(exc))
            continue
        if file is not None and not is_zoo(m.checkpoint) and not file.is_file():
            missing.append(f"{path}: models[{i}].checkpoint: no such file {shown(file)}; paths are relative to the "
                           "suite file's folder")  # fmt: skip
    if missing:
        raise SuiteError(*missing)
    return loaded
