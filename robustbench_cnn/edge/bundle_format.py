"""The edge bundle's layout and manifest (shared by the bundler and the validator; stdlib only).

::

    BUNDLE/
      manifest.json                 format version, source run, environment, per-file sha256,
                                    per-model expectations and tolerances
      models/<model>.<precision>.tflite
      data/eval.npz                 x: float32 (N, C, H, W) in [0, 1]; y: int64 (N,)
      data/adv-<model>.npz          one float32 (N, C, H, W) array per attack, crafted on the float model
      robustbench_cnn/...           this validator's own code (run it from BUNDLE with python -m)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EVAL_DATA = "data/eval.npz"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def attack_key(attack: str, norm: str, eps: float) -> str:
    """The npz key of one attack's adversarial images, e.g. ``pgd-linf-0.1``."""
    return f"{attack}-{norm}-{eps:g}"
