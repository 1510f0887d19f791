"""File and JSON integrity, standard library only (the torch-free edge validator ships this file):
a file's sha256 and a JSON object hook that refuses duplicate keys."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads(..., object_pairs_hook=unique_keys)``: a JSON object whose keys are unique. A duplicate
    (which JSON parsers resolve differently, the last one winning in Python's) is refused, not resolved."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:60]!r}")
        out[key] = value
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
