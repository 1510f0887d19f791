"""Content-addressed model cache: safetensors weights plus a JSON of everything that made them.

The key is a sha256 over (architecture, parameters, recipe, seed, exact data, format version),
so any change to what would be trained gives a new entry, and a rerun of the same suite reuses
the trained weights. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file
from torch import nn

from robustbench_cnn.errors import CheckpointError
from robustbench_cnn.models import structure

log = logging.getLogger(__name__)

CACHE_FORMAT = 3  # bump when training code changes its numbers (2: channels_last, 3: depthwise grads)
WEIGHTS = "model.safetensors"
META = "meta.json"


def cache_key(identity: dict[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable identity (sorted keys)."""
    blob = json.dumps({"cache_format": CACHE_FORMAT, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s state to ``path`` (safetensors, standard contiguous layout), atomically.

    The metadata carries the model's layer widths, so a pruned model reloads without pickling.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {structure.METADATA_KEY: structure.dumps(model), **(metadata or {})}
    _atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``, first narrowing its layers to the widths stored in the
    file (pruned models); any mismatch or corruption is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            stored = (fh.metadata() or {}).get(structure.METADATA_KEY)
            if stored is not None:
                shapes = {k: fh.get_slice(k).get_shape() for k in fh.keys()}  # noqa: SIM118 (not a dict)
                structure.apply_structure(model, json.loads(stored), shapes)
        load_model(model, str(path), strict=True)
    except (SafetensorError, RuntimeError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or does not fit the model: {first}") from None


class ModelCache:
    """``root/<arch>-<key>/{model.safetensors, meta.json}``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry(self, arch: str, key: str) -> Path:
        return self.root / f"{arch}-{key}"

    def load(self, model: nn.Module, arch: str, key: str) -> dict[str, Any] | None:
        """Fill ``model`` from the cache and return its metadata, or None on a miss.

        A corrupt entry is reported and treated as a miss (the cache is derived data).
        """
        folder = self.entry(arch, key)
        if not (folder / META).is_file() or not (folder / WEIGHTS).is_file():
            return None
        try:
            meta = json.loads((folder / META).read_text())
            load_weights(model, folder / WEIGHTS)
        except (CheckpointError, json.JSONDecodeError) as exc:
            log.warning("cache entry %s is unusable (%s); retraining", folder, exc)
            return None
        return meta

    def store(self, model: nn.Module, arch: str, key: str, meta: dict[str, Any]) -> Path:
        folder = self.entry(arch, key)
        save_weights(model, folder / WEIGHTS)
        _atomic_write(folder / META, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True)))
        return folder
