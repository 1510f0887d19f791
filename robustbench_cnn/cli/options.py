"""What several commands share: the default results root and one-line checks of output paths."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from robustbench_cnn.errors import InputError
from robustbench_cnn.zoo import zoo_dir


def default_out() -> Path:
    return Path(os.environ.get("ROBUSTBENCH_CNN_RESULTS", "results"))


def folder(path: Path, flag: str) -> Path:
    """``path`` resolved, refused in one line when it exists and is not a folder."""
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file, not a folder; choose a folder (it is created if missing)")
    return path


def out_file(path: Path | None, flag: str) -> Path | None:
    """An output file path, refused in one line when it is a folder or its parent is not one."""
    if path is None:
        return None
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; give a file path, e.g. {path / 'compare.md'}")
    if not path.resolve().parent.is_dir():
        raise InputError(f"{flag} {path}: its folder {path.resolve().parent} does not exist; create it first")
    return path


def zoo_dir_of(args: argparse.Namespace) -> Path | None:
    return zoo_dir(args.zoo_dir)
