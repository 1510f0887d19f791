"""Seeds derived from a run's seed and a unit of work's identity, so that a result depends only on
(suite, seed, the cell, the images), never on what ran before it in the process: resumed, reordered
or sharded runs draw the same random numbers."""

from __future__ import annotations

import hashlib


def derived_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and ``parts`` (e.g. a cell label and a first image index)."""
    blob = "\x1f".join([str(seed), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1
