"""Names that become paths, and the one place a run's directory is made from a suite name.

Suite and model names become directory names, file names and keys of results tables, so they are
restricted to ``[A-Za-z0-9][A-Za-z0-9_.-]*`` (at most 64 characters; never ``.``, ``..`` or a path
separator) and must stay unique under :func:`name_key`. :func:`run_root` confines results to ``--out``.
"""

from __future__ import annotations

import re
from pathlib import Path

from robustbench_cnn.errors import InputError, shown

MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(value: str) -> str:
    """A suite or model name: ``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 64 characters, and not one that
    reads back from ``results.csv`` as a number or a boolean ("1e3", "nan", "true")."""
    if len(value) > MAX_NAME or not _NAME.fullmatch(value):
        raise ValueError(
            f"{shown(value, 80)} is not a valid name; use at most {MAX_NAME} letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    try:
        float(value)
        numeric = True
    except ValueError:
        numeric = value.casefold() in ("true", "false")
    if numeric:
        raise ValueError(f"name {shown(value)} reads as a number or boolean in results.csv; start it with a letter")
    return value


def name_key(name: str) -> str:
    """What tables, file systems and reports may merge: case, and '-', '_' and '.' as one character."""
    return re.sub(r"[-_.]", "_", name.casefold())


def check_path_text(value: str) -> str:
    """A path written in a suite file: non-empty, no control characters (a NUL would fail at run time)."""
    if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{shown(value, 80)} is not a usable path (empty, or has control characters)")
    return value


def run_root(out_root: Path, suite_name: str) -> Path:
    """``out_root/<suite_name>``: the folder that holds a suite's runs, guaranteed inside ``out_root``.

    Raises :class:`InputError` (one line, exit 2) for a name that is not a valid suite name or a
    folder that resolves outside ``out_root`` (e.g. a symbolic link planted there)."""
    try:
        check_name(suite_name)
    except ValueError as exc:
        raise InputError(f"suite name: {exc}") from None
    root = Path(out_root).resolve()
    folder = root / suite_name
    real = folder.resolve()
    if not real.is_relative_to(root):
        raise InputError(f"{folder}: resolves to {real}, outside the results root {root}; remove the link")
    return folder
