"""A local model zoo: published checkpoints with their architecture, preprocessing, provenance and
published figures (RobustBench's ``load_model``, without the download).

A suite names an entry with ``checkpoint = "zoo:NAME"``; the file is found in the zoo folder
(``--zoo-dir`` or ``$ROBUSTBENCH_CNN_ZOO``: the folder itself, or its ``models/`` subfolder) and
identified by its sha256, never by its name. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from robustbench_cnn.contract.integrity import sha256  # standard library only: the one file hasher
from robustbench_cnn.errors import RobustBenchError, UnknownNameError, did_you_mean, shown
from robustbench_cnn.zoo.catalog import ENTRIES
from robustbench_cnn.zoo.entries import RAW, Figure, Preprocess, ZooEntry

PREFIX = "zoo:"
ENV = "ROBUSTBENCH_CNN_ZOO"
ZOO: dict[str, ZooEntry] = {e.name: e for e in ENTRIES}


class ZooError(RobustBenchError):
    """A zoo model cannot be used as asked: unknown, missing, or not the published file (exit code 2)."""

    exit_code = 2


def entry(name: str) -> ZooEntry:
    """The entry ``name`` (with or without the ``zoo:`` prefix); a did-you-mean otherwise."""
    bare = name.removeprefix(PREFIX)
    if bare not in ZOO:
        raise UnknownNameError(f"unknown zoo model {shown(bare, 80)}{did_you_mean(bare, ZOO)}")
    return ZOO[bare]


def require_shape(name: str, shape: tuple[int, int, int], where: str) -> None:
    """Zoo entry ``name`` takes images of its published shape ``(C, H, W)``; other ones are one line."""
    e = entry(name)
    if tuple(shape) != e.image_shape:
        raise ZooError(f"{where}: zoo:{e.name} takes {e.image_shape} images (C, H, W, {e.dataset}); the dataset has "
                       f"{tuple(shape)}")  # fmt: skip


def is_zoo(checkpoint: str | None) -> bool:
    return checkpoint is not None and checkpoint.startswith(PREFIX)


def zoo_dir(explicit: Path | None = None) -> Path | None:
    """``explicit`` (``--zoo-dir``), else ``$ROBUSTBENCH_CNN_ZOO``, else None; absolute."""
    if explicit is not None:
        return Path(explicit).resolve()
    env = os.environ.get(ENV)
    return Path(env).resolve() if env else None


def locate(name: str, folder: Path | None, where: str = "") -> Path:
    """The verified file of zoo entry ``name`` in ``folder`` (or its ``models/``): a missing folder or
    file, or a file whose sha256 is not the published one, is one :class:`ZooError` line."""
    e = entry(name)
    prefix = f"{where}: " if where else ""
    if folder is None:
        raise ZooError(f"{prefix}zoo model '{e.name}' needs the zoo folder: pass --zoo-dir DIR or set ${ENV} "
                       "(nothing is downloaded)")  # fmt: skip
    candidates = [folder / "models" / e.file, folder / e.file]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ZooError(f"{prefix}zoo model '{e.name}': no file {e.file} in {shown(folder)} or its models/ folder; "
                       "point --zoo-dir at the folder that holds it")  # fmt: skip
    digest = sha256(path)
    if digest != e.sha256:
        raise ZooError(f"{prefix}zoo model '{e.name}': {shown(path)} has sha256 {digest[:16]}..., not the published "
                       f"{e.sha256[:16]}...; it is another file: restore the published one")  # fmt: skip
    return path


def resolve_checkpoint(text: str, base_dir: Path, folder: Path | None, where: str = "") -> Path:
    """A model's ``checkpoint``: a verified zoo file for ``zoo:NAME``, else a path relative to ``base_dir``."""
    if is_zoo(text):
        return locate(text, folder, where)
    return (base_dir / text).resolve()


__all__ = ["ENV", "PREFIX", "RAW", "ZOO", "Figure", "Preprocess", "ZooEntry", "ZooError", "entry", "is_zoo",
           "locate", "require_shape", "resolve_checkpoint", "zoo_dir"]  # fmt: skip
