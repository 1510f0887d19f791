"""The validation boundary of an edge bundle: its manifest, typed and range-checked, and its paths, confined.

Nothing in ``manifest.json`` is trusted until :func:`read_manifest` returns: the format number is
supported, every field has its type and range, every name is safe, every path the manifest names is
relative, normalised, listed in ``files`` with its sha256, and resolves (symlinks followed) inside
the bundle. :func:`verify_files` then checks every listed file's size and sha256 before any is read.
Every problem is a :class:`BundleError`: one line ``<bundle path/file>: <field>: <problem>; <fix>``.
Standard library only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustbench_cnn.contract.integrity import sha256, unique_keys
from robustbench_cnn.edge.bundle_format import (
    EVAL_DATA,
    FORMAT_VERSION,
    MANIFEST,
    MAX_FILE_BYTES,
    MAX_MANIFEST_BYTES,
    PRECISIONS,
)
from robustbench_cnn.errors import InputError

REBUILD = "re-create the bundle with robustbench-cnn edge bundle"
RECOPY = "copy the bundle again from the machine that built it"
PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_MODELS, MAX_FILES, MAX_PATH = 256, 10_000, 255
PARITY = ("passed", "failed", "unrecorded")  # an export's parity check as the bundler found it
MODEL_SUFFIXES = (".tflite", ".onnx", ".pte")  # a TFLite runtime, ONNX Runtime (an artifact), ExecuTorch


class BundleError(InputError):
    """The bundle cannot be trusted or read (exit 2); nothing is run or written."""

    def __init__(self, where: Path | str, field: str, problem: str, fix: str = REBUILD) -> None:
        super().__init__(f"{where}: {field}: {problem}; {fix}")


@dataclass(frozen=True)
class Attack:
    attack: str
    norm: str
    eps: float


@dataclass(frozen=True)
class ModelEntry:
    """One model of the bundle and what it must reproduce on the device."""

    index: int
    model: str
    arch: str
    defense: str
    compression: str
    precision: str
    file: str
    predictions: str
    adversarial: str | None
    attacks: dict[str, Attack]
    clean_acc: float
    robust_acc: dict[str, float]
    corruption_acc: dict[str, float]  # {corruption-s<severity>: accuracy} on the bundle's corrupted sets
    layout: str = "NCHW"  # what the file takes: NCHW (our exports) or NHWC (a build from another toolchain)
    input_scale: float = 1.0  # 255 for a file that takes 0..255 pixels (its own quantization is in the file)

    @property
    def format(self) -> str:
        """``tflite`` (a TFLite runtime runs it), ``onnx`` (ONNX Runtime) or ``executorch`` (a ``.pte``)."""
        suffix = self.file.rsplit(".", 1)[-1]
        return "executorch" if suffix == "pte" else suffix

    @property
    def label(self) -> str:
        """``model [precision]``, with the format where it is not TFLite (a model may ship in two)."""
        return f"{self.model} [{self.precision}{'' if self.format == 'tflite' else ' ' + self.format}]"


@dataclass(frozen=True)
class CorruptionSets:
    """The bundle's corrupted images: ``images`` eval images per set, each set a corruption and severity."""

    file: str
    label: str
    images: int
    sets: dict[str, tuple[str, int]]


@dataclass(frozen=True)
class Tolerances:
    accuracy: float
    agreement: float
    adversarial_agreement: float


@dataclass(frozen=True)
class Manifest:
    """A checked manifest; ``root`` is the resolved bundle folder, ``bundle`` the folder as given."""

    bundle: Path
    root: Path
    source: dict[str, Any]
    tolerances: Tolerances
    models: tuple[ModelEntry, ...]
    files: dict[str, str]
    validator: dict[str, str]
    left_out: tuple[dict[str, str], ...]
    corruptions: CorruptionSets | None = None

    def locate(self, rel: str, field: str) -> Path:
        """The resolved path of ``rel`` (already checked relative and listed); refuses one that leaves."""
        return confine(self.bundle, self.root, rel, field)


def confine(bundle: Path, root: Path, rel: str, field: str) -> Path:
    """``bundle/rel`` resolved (symlinks followed); a BundleError when it is not inside ``root``."""
    path = (bundle / rel).resolve()
    if not path.is_relative_to(root):
        raise BundleError(bundle / rel, field, "resolves outside the bundle (a symbolic link leaves it)", RECOPY)
    return path


class _Checker:
    """Typed field access with the manifest path and the field path in every error."""

    def __init__(self, where: Path) -> None:
        self.where = where

    def fail(self, field: str, problem: str, fix: str = REBUILD) -> BundleError:
        return BundleError(self.where, field, problem, fix)

    def obj(self, value: Any, field: str, required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field, f"expected an object, found {_kind(value)}")
        for key in required:
            if key not in value:
                raise self.fail(f"{field}.{key}" if field else key, "missing")
        return value

    def text(self, value: Any, field: str) -> str:
        """A name or a note: printable (no newline or control character), 1 to 200 characters; never a path."""
        if not isinstance(value, str):
            raise self.fail(field, f"expected a string, found {_kind(value)}")
        if not 0 < len(value) <= 200 or not value.isprintable():
            raise self.fail(field, f"{value[:60]!r} is not printable text of 1 to 200 characters")
        return value

    def number(self, value: Any, field: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(field, f"expected a number, found {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value) or not lo <= value <= hi:
            raise self.fail(field, f"{value!r} is outside [{lo:g}, {hi:g}]")
        return float(value)

    def path(self, value: Any, field: str, suffix: str | tuple[str, ...], files: dict[str, str]) -> str:
        """A relative, normalised path listed in ``files`` with the given suffix (or one of them)."""
        if not isinstance(value, str):
            raise self.fail(field, f"expected a relative path, found {_kind(value)}")
        shown = value[:80]
        if len(value) > MAX_PATH or not all(PART.fullmatch(p) for p in value.split("/")):
            raise self.fail(field, f"{shown!r} is not a relative path of plain names (no leading /, no . or .., no \\)")
        if not value.endswith(suffix):
            wanted = suffix if isinstance(suffix, str) else " or ".join(suffix)
            raise self.fail(field, f"{shown!r} is not a {wanted} file")
        if value not in files:
            raise BundleError(self.where.parent / value, field, "not listed in files (its sha256 is unrecorded)")
        return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def read_manifest(bundle: Path) -> Manifest:
    """Read and check ``bundle/manifest.json``; every path it names is confined and listed."""
    root = bundle.resolve()
    if not root.is_dir():
        raise BundleError(bundle, "bundle", "not a directory", "pass the folder written by robustbench-cnn edge bundle")
    where = bundle / MANIFEST
    path = confine(bundle, root, MANIFEST, "manifest")
    if not path.is_file():
        raise BundleError(where, "manifest", f"no {MANIFEST}; is {bundle} an edge bundle?", RECOPY)
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(where, "manifest", f"larger than {MAX_MANIFEST_BYTES >> 20} MiB", RECOPY)
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=unique_keys)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        problem = f"unreadable manifest ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})"
        raise BundleError(where, "manifest", problem, RECOPY) from None
    return parse_manifest(raw, bundle, root)


def parse_manifest(raw: Any, bundle: Path, root: Path) -> Manifest:
    """The typed manifest of ``raw`` (the decoded JSON); a BundleError on the first bad field."""
    c = _Checker(bundle / MANIFEST)
    c.obj(raw, "", ("format_version",))
    version = raw["format_version"]
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise c.fail("format_version", f"bundle format {version!r}; this validator reads format {FORMAT_VERSION}")
    c.obj(raw, "", ("files", "models", "tolerances", "source", "validator"))
    files = _files(c, raw["files"], "files")
    c.path(EVAL_DATA, "files", ".npz", files)
    validator = _files(c, raw["validator"], "validator")
    for rel, digest in validator.items():
        if files.get(rel) != digest:
            raise c.fail(f"validator.{rel}", "differs from (or is missing in) files")
    src = c.obj(raw["source"], "source", ("suite", "dataset", "run_id", "images"))
    source: dict[str, Any] = {key: c.text(src[key], f"source.{key}") for key in ("suite", "dataset", "run_id")}
    if not isinstance(src["images"], int):
        raise c.fail("source.images", f"expected an integer, found {_kind(src['images'])}")
    source["images"] = int(c.number(src["images"], "source.images", 1, 10**7))
    source["environment"] = src.get("environment") if isinstance(src.get("environment"), dict) else {}
    tol = c.obj(raw["tolerances"], "tolerances", ("accuracy", "agreement", "adversarial_agreement"))
    tolerances = Tolerances(*(c.number(tol[k], f"tolerances.{k}", 0.0, 1.0) for k in Tolerances.__dataclass_fields__))
    models = raw["models"]
    if not isinstance(models, list) or not 1 <= len(models) <= MAX_MODELS:
        raise c.fail("models", f"expected a list of 1 to {MAX_MODELS} models, found {_kind(models)}")
    corruptions = _corruptions(c, raw.get("corruptions"), files, source["images"])
    keys = set(corruptions.sets) if corruptions is not None else set()
    entries = tuple(_model(c, m, i, files, keys) for i, m in enumerate(models))
    seen: set[tuple[str, str, str]] = set()
    for e in entries:
        if (e.model, e.precision, e.format) in seen:
            raise c.fail(f"models[{e.index}]", f"{e.label} is listed twice")
        seen.add((e.model, e.precision, e.format))
    left_out = _left_out(c, raw.get("left_out", []))
    return Manifest(bundle, root, source, tolerances, entries, files, validator, left_out, corruptions)


def _corruptions(c: _Checker, raw: Any, files: dict[str, str], images: int) -> CorruptionSets | None:
    """``corruptions``: ``{file, label, images, sets: {key: {corruption, severity}}}``, or absent."""
    if raw is None:
        return None
    c.obj(raw, "corruptions", ("file", "label", "images", "sets"))
    sets = {}
    for key, s in c.obj(raw["sets"], "corruptions.sets").items():
        where = f"corruptions.sets.{c.text(key, 'corruptions.sets')}"
        c.obj(s, where, ("corruption", "severity"))
        sets[key] = (
            c.text(s["corruption"], f"{where}.corruption"),
            int(c.number(s["severity"], f"{where}.severity", 1, 5)),
        )
    if not isinstance(raw["images"], int):
        raise c.fail("corruptions.images", f"expected an integer, found {_kind(raw['images'])}")
    return CorruptionSets(
        c.path(raw["file"], "corruptions.file", ".npz", files),
        c.text(raw["label"], "corruptions.label"),
        int(c.number(raw["images"], "corruptions.images", 1, images)),
        sets,
    )


def _files(c: _Checker, value: Any, field: str) -> dict[str, str]:
    c.obj(value, field)
    if len(value) > MAX_FILES:
        raise c.fail(field, f"more than {MAX_FILES} files")
    for rel, digest in value.items():
        c.path(rel, field, "", value)
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            raise c.fail(f"{field}.{rel}", "expected a sha256 (64 lowercase hex digits)")
    return dict(value)


def _model(c: _Checker, raw: Any, i: int, files: dict[str, str], corrupted: set[str]) -> ModelEntry:
    f = f"models[{i}]"
    m = c.obj(raw, f, ("model", "arch", "defense", "compression", "precision", "file", "predictions", "expected",
                       "parity"))  # fmt: skip
    contract = c.obj(m.get("input", {"layout": "NCHW", "range": "0..1"}), f"{f}.input", ("layout", "range"))
    if contract["layout"] not in ("NCHW", "NHWC") or contract["range"] not in ("0..1", "0..255"):
        raise c.fail(f"{f}.input", "layout must be NCHW or NHWC and range 0..1 or 0..255")
    names = {k: c.text(m[k], f"{f}.{k}") for k in ("model", "arch", "defense", "compression")}
    precision = m["precision"]
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise c.fail(f"{f}.precision", f"{str(precision)[:40]!r} is not one of {', '.join(PRECISIONS)}")
    if not isinstance(m["parity"], str) or m["parity"] not in PARITY:
        raise c.fail(f"{f}.parity", f"{str(m['parity'])[:40]!r} is not one of {', '.join(PARITY)}")
    attacks = {}
    for key, a in c.obj(m.get("attacks", {}), f"{f}.attacks").items():
        af = f"{f}.attacks.{c.text(key, f'{f}.attacks')}"
        c.obj(a, af, ("attack", "norm", "eps"))
        attacks[key] = Attack(c.text(a["attack"], f"{af}.attack"), c.text(a["norm"], f"{af}.norm"),
                              c.number(a["eps"], f"{af}.eps", 0.0, 1e6))  # fmt: skip
    adversarial = m.get("adversarial")
    if attacks or adversarial is not None:
        adversarial = c.path(adversarial, f"{f}.adversarial", ".npz", files)
    exp = c.obj(m["expected"], f"{f}.expected", ("clean_acc", "robust_acc"))
    robust = c.obj(exp["robust_acc"], f"{f}.expected.robust_acc")
    if set(robust) != set(attacks):
        raise c.fail(f"{f}.expected.robust_acc", "its keys differ from the model's attacks")
    corruption = c.obj(exp.get("corruption_acc", {}), f"{f}.expected.corruption_acc")
    if set(corruption) != corrupted:
        raise c.fail(f"{f}.expected.corruption_acc", "its keys differ from the bundle's corruptions.sets")
    return ModelEntry(
        index=i, **names, precision=precision,
        file=c.path(m["file"], f"{f}.file", MODEL_SUFFIXES, files),
        predictions=c.path(m["predictions"], f"{f}.predictions", ".npz", files),
        adversarial=adversarial, attacks=attacks,
        clean_acc=c.number(exp["clean_acc"], f"{f}.expected.clean_acc", 0.0, 1.0),
        robust_acc={k: c.number(v, f"{f}.expected.robust_acc.{k}", 0.0, 1.0) for k, v in robust.items()},
        corruption_acc={k: c.number(v, f"{f}.expected.corruption_acc.{k}", 0.0, 1.0) for k, v in corruption.items()},
        layout=contract["layout"], input_scale=255.0 if contract["range"] == "0..255" else 1.0,
    )  # fmt: skip


def _left_out(c: _Checker, raw: Any) -> tuple[dict[str, str], ...]:
    """``left_out``: the exports the bundler skipped, each ``{model, precision, reason}`` (reported only)."""
    if not isinstance(raw, list) or len(raw) > MAX_MODELS:
        raise c.fail("left_out", f"expected a list of at most {MAX_MODELS} entries, found {_kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        c.obj(item, f"left_out[{i}]", ("model", "precision", "reason"))
        out.append({k: c.text(item[k], f"left_out[{i}].{k}") for k in ("model", "precision", "reason")})
    return tuple(out)


def verify_files(manifest: Manifest) -> None:
    """Every listed file is inside the bundle, a regular file of sane size, with its recorded sha256."""
    bad = []
    for rel, digest in sorted(manifest.files.items()):
        path = manifest.locate(rel, "files")
        if not path.is_file():
            bad.append((rel, "missing", RECOPY))
        elif path.stat().st_size > MAX_FILE_BYTES:
            bad.append((rel, f"larger than {MAX_FILE_BYTES >> 20} MiB", REBUILD))
        elif sha256(path) != digest:
            bad.append((rel, "sha256 mismatch (the file was modified or corrupted)", RECOPY))
    if bad:
        rel, problem, fix = bad[0]
        more = f" (and {len(bad) - 1} more file{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        raise BundleError(manifest.bundle / rel, "files", problem + more, fix)
