"""Content-addressed model cache: safetensors weights plus a JSON of everything that made them.

The key is a sha256 over (architecture, parameters, recipe, seed, exact data, format version, and
the source code of the architecture's factory module and the suite's plugins: see
:func:`code_fingerprint`), so any change to what would be trained gives a new entry, and a rerun
of the same suite reuses the trained weights. Each entry's ``meta.json`` records its key and the
weights' sha256, verified on every load: an entry that is corrupt, malformed or not the one its key
names is reported in one warning line and retrained, never used. :meth:`ModelCache.lock` keeps two
runs or workers from training or writing the same key at once. Nothing is ever unpickled.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from robustbench_cnn.atomic import atomic_write_bytes
from robustbench_cnn.contract.integrity import sha256
from robustbench_cnn.errors import CheckpointError
from robustbench_cnn.locks import file_lock
from robustbench_cnn.models import structure
from robustbench_cnn.models.checkpoint import CheckpointFormat, load_checkpoint
from robustbench_cnn.models.sources import code_fingerprint

log = logging.getLogger(__name__)

CACHE_FORMAT = 5  # bump when training code changes its numbers (2: channels_last, 3: depthwise grads, 4: verified,
# 5: NCHW for models with a conv under 16 channels)
WEIGHTS = "model.safetensors"
META = "meta.json"
LOCKS = ".locks"

__all__ = ["ModelCache", "cache_key", "code_fingerprint", "load_weights", "save_weights", "sha256_file"]


def cache_key(identity: dict[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable identity (sorted keys)."""
    blob = json.dumps({"cache_format": CACHE_FORMAT, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def sha256_file(path: Path) -> str:
    """sha256 of a weights file (hex)."""
    return sha256(path)


def weights_bytes(model: nn.Module, metadata: dict[str, str] | None = None, name: str = "the weights") -> bytes:
    """``model``'s state as a safetensors file's bytes (standard contiguous layout).

    The metadata carries the model's layer widths, so a pruned model reloads without pickling.
    Non-finite weights (a diverged training run) are refused with a :class:`CheckpointError`
    naming ``name``.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"refusing to save {name}: {bad} holds NaN or infinite values (training diverged?)")
    meta = {structure.METADATA_KEY: structure.dumps(model), **(metadata or {})}
    return save(state, metadata=meta)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write :func:`weights_bytes` of ``model`` to ``path``, atomically."""
    atomic_write_bytes(path, weights_bytes(model, metadata, str(path)))


def load_weights(model: nn.Module, path: Path, fmt: CheckpointFormat = "auto") -> None:
    """Load a checkpoint (safetensors or a torch.save state dict, see
    :mod:`robustbench_cnn.models.checkpoint`) into ``model``; any problem is one CheckpointError line."""
    load_checkpoint(model, path, fmt)


class _Unusable(Exception):
    """A cache entry that must not be used (the message says why)."""


class ModelCache:
    """``root/<arch>-<key>/{model.safetensors, meta.json}``; locks under ``root/.locks/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry(self, arch: str, key: str) -> Path:
        return self.root / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', arch)}-{key}"

    @contextmanager
    def lock(self, arch: str, key: str, timeout_s: float | None = None) -> Iterator[None]:
        """Hold the key's lock across ``load`` -> train -> ``store``, so a key is trained once."""
        with file_lock(self.root / LOCKS / f"{self.entry(arch, key).name}.lock", timeout_s):
            yield

    def _meta(self, folder: Path, key: str) -> dict[str, Any]:
        try:
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Unusable(f"{META} is unreadable: {type(exc).__name__}") from None
        if not isinstance(meta, dict):
            raise _Unusable(f"{META} is a {type(meta).__name__}, not an object")
        if meta.get("key") != key or not isinstance(meta.get("weights_sha256"), str):
            raise _Unusable(f"{META} does not name key {key} and its weights' sha256")
        if not (folder / WEIGHTS).is_file() or sha256_file(folder / WEIGHTS) != meta["weights_sha256"]:
            raise _Unusable(f"{WEIGHTS} is missing or does not match the sha256 in {META}")
        return meta

    def load(self, model: nn.Module, arch: str, key: str) -> dict[str, Any] | None:
        """Fill ``model`` from the cache and return its metadata, or None on a miss.

        A corrupt, malformed or mismatching entry is reported and treated as a miss (the cache is
        derived data); ``model`` is only touched once the entry has loaded into a copy of it.
        """
        folder = self.entry(arch, key)
        if not folder.exists():
            return None
        try:
            meta = self._meta(folder, key)
            load_checkpoint(copy.deepcopy(model), folder / WEIGHTS, "wrapped")
            load_checkpoint(model, folder / WEIGHTS, "wrapped")
        except (_Unusable, CheckpointError, OSError) as exc:
            log.warning("cache entry %s is unusable (%s); retraining", folder, str(exc).splitlines()[0])
            return None
        return meta

    def store(self, model: nn.Module, arch: str, key: str, meta: dict[str, Any]) -> Path:
        """Write the entry (weights, then ``meta.json`` with the key and the weights' sha256), replacing
        whatever unusable files or folders stood in the way, and temporary files of a killed writer.
        Call it holding :meth:`lock`."""
        folder = self.entry(arch, key)
        if folder.exists() and not folder.is_dir():
            folder.unlink()
        for name in (WEIGHTS, META):
            if (folder / name).is_dir():
                shutil.rmtree(folder / name)
        for stale in folder.glob(".*.tmp") if folder.is_dir() else ():  # a writer killed mid-write left it;
            stale.unlink(missing_ok=True)  # the key's lock (held by the caller) rules out a live one
        save_weights(model, folder / WEIGHTS)
        meta = {**meta, "key": key, "weights_sha256": sha256_file(folder / WEIGHTS)}
        text = json.dumps(meta, indent=2, sort_keys=True, default=str)
        atomic_write_bytes(folder / META, text.encode("utf-8"))
        return folder
