"""The validator checks itself: the sha256 of its own source files against the bundle manifest's ``validator``.

A tampered validator could skip this check, so it is a guard against accidents and naive edits;
the root of trust is the bundle's ``SHA256SUMS`` (manifest.json and the validator's files), whose
own sha256 is shipped separately and checked with the system's ``sha256sum`` before anything in the
bundle runs (README, "Validate on a Raspberry Pi"). Standard library only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from robustbench_cnn.contract.integrity import sha256
from robustbench_cnn.edge.bundle_format import MANIFEST, VALIDATOR_FILES, sums_text
from robustbench_cnn.edge.manifest import RECOPY, BundleError, Manifest


def code_root() -> Path:
    """The folder that holds the running ``robustbench_cnn`` package."""
    return Path(__file__).resolve().parents[2]


def own_hashes(root: Path | None = None) -> dict[str, str]:
    """``{path relative to the code root: sha256}`` of the running validator's files."""
    root = root or code_root()
    out = {}
    for rel in VALIDATOR_FILES:
        path = root / rel
        if not path.is_file():
            raise BundleError(path, "validator", "missing from the running validator", RECOPY)
        out[rel] = sha256(path)
    return out


def check_self(manifest: Manifest, hashes: dict[str, str]) -> None:
    """Refuse to run when a validator file differs from (or is absent in) the manifest's ``validator``."""
    for rel, digest in sorted(hashes.items()):
        recorded = manifest.validator.get(rel)
        if recorded != digest:
            problem = "not recorded in the manifest" if recorded is None else "sha256 differs from the manifest"
            fix = "run the validator this bundle ships, after checking SHA256SUMS (README: Validate on a Raspberry Pi)"
            raise BundleError(code_root() / rel, "validator", f"{problem} (this validator was modified)", fix)


def sums_digest(manifest: Manifest, hashes: dict[str, str]) -> str:
    """The sha256 that ``SHA256SUMS`` has when it matches this manifest and this validator: the hash
    shipped separately with the bundle (printed as a convenience; ``sha256sum SHA256SUMS`` is the check)."""
    text = sums_text({MANIFEST: sha256(manifest.locate(MANIFEST, "manifest")), **hashes})
    return hashlib.sha256(text.encode()).hexdigest()
