"""The edge bundle's layout and manifest (shared by the bundler and the validator; stdlib only).

::

    BUNDLE/
      manifest.json                 format version, source run, environment, per-file sha256 (``files``),
                                    the validator's own sha256 (``validator``), per-model expectations
                                    and tolerances, the exports left out and why (``left_out``)
      SHA256SUMS                    sha256sum lines of manifest.json and the validator's files: its own
                                    sha256, shipped separately, is the root of trust
      models/<model>.<precision>.tflite   (or .onnx: an ONNX artifact, run with ONNX Runtime; or .pte: an
                                    ExecuTorch program, run where torch + executorch are installed)
      data/eval.npz                 x: float32 (N, C, H, W) in [0, 1]; y: int64 (N,)
      data/pred-<model>.<precision>[.<format>].npz   int64 (N,) reference predictions per key (clean,
                                    attack keys); the format is named for every format but tflite
      data/adv-<model>.npz          one float32 (N, C, H, W) array per attack, crafted on the float model
      robustbench_cnn/...           this validator's own code (run it from BUNDLE with python -m)
"""

from __future__ import annotations

import hashlib
import re

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
EVAL_DATA = "data/eval.npz"
CORRUPTED_DATA = "data/corrupted.npz"  # uint8 (n, C, H, W) per corruption and severity, shared by the models
RESULTS_DIR = "validation"
PRECISIONS = ("fp32", "int8")

MAX_MANIFEST_BYTES = 4 << 20  # a manifest of thousands of models stays far below this
MAX_MODEL_BYTES = 256 << 20  # per model file (.tflite, .onnx, .pte)
MAX_ARRAY_BYTES = 256 << 20  # per array once inflated (CIFAR-10's 10,000 eval images: 123 MB)
MAX_FILE_BYTES = 1 << 30  # any file the manifest lists

# The validator's code, relative to the folder that holds the ``robustbench_cnn`` package.
VALIDATOR_FILES = tuple(
    f"robustbench_cnn/{rel}"
    for rel in (
        "__init__.py", "errors.py", "contract/__init__.py", "contract/integrity.py", "contract/schema.py",
        "edge/__init__.py", "edge/__main__.py", "edge/arrays.py",
        "edge/bundle_format.py", "edge/manifest.py", "edge/models.py", "edge/selfcheck.py", "edge/validate.py",
        "runtime/__init__.py", "runtime/timing.py", "runtime/tflite_runtime.py", "runtime/onnx_runtime.py",
        "runtime/executorch_runtime.py", "runtime/batches.py",
    )
)  # fmt: skip


def attack_key(attack: str, norm: str, eps: float) -> str:
    """The npz key of one attack's adversarial images, e.g. ``pgd-linf-0.1``."""
    return f"{attack}-{norm}-{eps:g}"


def sums_text(digests: dict[str, str]) -> str:
    """``sha256sum`` lines (``<hex>  <path>``) for ``{path: hex}``, sorted by path."""
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(digests.items()))


def corruption_key(corruption: str, severity: int) -> str:
    """The name of one corrupted set in a bundle (an npz member name and a manifest key)."""
    return f"{corruption}-s{severity}"


def file_stem(name: str) -> str:
    """``name`` as a file-name part the validator accepts (letters, digits, ``_ . + -``, not leading
    ``. + -``); a name that needed changes gets 8 hex digits of its sha256, so two names never share a file."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:64]
    if name and safe == name and not name.startswith((".", "+", "-")):
        return name
    return f"{safe.lstrip('.+-') or 'model'}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
