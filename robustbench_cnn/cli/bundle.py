"""``robustbench-cnn edge bundle RUN_DIR --out DIR``: package a run's edge models for the device.

The bundle holds every ``.tflite`` and ``.pte`` (ExecuTorch) export of the run, the evaluation images (clean, and the
adversarial ones crafted on each float model), the predictions the models gave here (the
reference), expected accuracies with tolerances, the sha256 of every file, and a copy of the
torch-free validator (layout: ``robustbench_cnn.edge.bundle_format``). Expectations are computed
by running each file on its runtime on the bundled images, so they hold exactly for the images shipped
(a ``.pte`` needs the ``executorch`` extra here, and torch on the device: see docs/edge.md).

Which exports go in: an export whose ``check_parity`` row is 1 (a run from before that metric: one
with rows at all); one whose parity failed (``check_parity`` 0) only with ``include_failed_parity``;
an export with no rows failed to export. Each one left out is logged with its reason and listed in
the manifest's ``left_out``. The suite is read from the run's own copy (``RUN_DIR/suite.toml``),
else from the recorded ``suite_path``, and in both cases only when its sha256 is the run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import robustbench_cnn
from robustbench_cnn.config.load import LoadedSuite, load_suite, parse_suite
from robustbench_cnn.contract.integrity import sha256
from robustbench_cnn.contract.manifest import read_run_manifest
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.corruptions import SET_NAME, corrupt
from robustbench_cnn.data import load_dataset
from robustbench_cnn.edge.bundle_format import (
    CORRUPTED_DATA,
    EVAL_DATA,
    FORMAT_VERSION,
    MANIFEST,
    SUMS,
    VALIDATOR_FILES,
    attack_key,
    corruption_key,
    file_stem,
    sums_text,
)
from robustbench_cnn.edge.models import open_model
from robustbench_cnn.engine.store import CellStore
from robustbench_cnn.errors import InputError, RobustBenchError

log = logging.getLogger(__name__)

EXPORT_FILE = "exports/{model}{suffix}"
BUNDLED = {"tflite": ".tflite", "executorch": ".pte"}  # the export formats a bundle ships, and their files


def export_file(run_dir: Path, model: str, fmt: str, int8: bool) -> Path:
    """The run's exported file of ``model`` in ``fmt``."""
    return run_dir / EXPORT_FILE.format(model=model, suffix=(".int8" if int8 else "") + BUNDLED[fmt])


def _run_suite(run_dir: Path, manifest: Mapping[str, Any]):
    """The suite the run used: ``RUN_DIR/suite.toml`` if present, else ``suite_path``; sha256 must match."""

    want = manifest.get("suite_sha256")
    recorded = Path(str(manifest.get("suite_path", "")))
    copy = run_dir / "suite.toml"
    fix = "bundle a run made from the current suite file (re-run it), or restore the suite as it was"
    if copy.is_file():
        raw = copy.read_bytes()
        if hashlib.sha256(raw).hexdigest() != want:
            raise InputError(f"{copy}: suite_sha256: differs from the run's manifest.json (edited since); {fix}")
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{copy}: invalid TOML: {exc}") from None
        return LoadedSuite(parse_suite(data, str(copy)), recorded.resolve(), want)  # relative paths: as in the run
    loaded = load_suite(recorded)
    if loaded.sha256 != want:
        raise InputError(f"{recorded}: suite_sha256: differs from {run_dir / 'manifest.json'} and the run has no "
                         f"suite.toml copy (the suite was edited after the run); {fix}")  # fmt: skip
    return loaded


def _run_context(run_dir: Path):
    """(manifest, suite spec, dataset) of a finished run; the dataset must match its fingerprint."""

    if not (run_dir / "manifest.json").is_file():
        raise InputError(f"{run_dir}: not a run directory (no manifest.json); bundle a finished run")
    manifest = read_run_manifest(run_dir / "manifest.json")
    missing = [k for k in ("run_id", "seed", "suite_path", "suite_sha256", "dataset", "models") if k not in manifest]
    if missing or not isinstance(manifest["dataset"], dict) or "fingerprint" not in manifest["dataset"]:
        raise InputError(f"{run_dir / 'manifest.json'}: {', '.join(missing) or 'dataset.fingerprint'}: missing; "
                         "bundle a finished run (robustbench-cnn run)")  # fmt: skip
    loaded = _run_suite(run_dir, manifest)
    data = load_dataset(loaded.spec.dataset, loaded.resolve(loaded.spec.dataset.data_dir))
    if data.fingerprint != manifest["dataset"]["fingerprint"]:
        raise RobustBenchError(f"{run_dir}: the data set on disk differs from the one the run used")
    return manifest, loaded.spec, data


def _adversarial(run_dir: Path, mspec, n: int) -> dict[str, tuple[dict, np.ndarray]]:
    """``{attack key: (attack params, adversarial images[:n])}`` stored by the run's attack cells, found
    through the run's cell index (``cells/index.json``), never by planning the suite again."""

    out = {}
    for entry in CellStore(run_dir).read_index()["cells"]:
        if not isinstance(entry, dict) or entry.get("model") != mspec.name or entry.get("kind") != "attack":
            continue
        cid, p = entry.get("id"), entry.get("params")
        path = run_dir / "cells" / f"{cid}.adv.npy"
        if isinstance(cid, str) and cid.isalnum() and isinstance(p, dict) and path.is_file():
            params = {"attack": p["attack"], "norm": p["norm"], "eps": p["eps"]}
            out[attack_key(p["attack"], p["norm"], p["eps"])] = (params, np.load(path, allow_pickle=False)[:n])
    return out


def _read_results(run_dir: Path):

    try:
        return read_csv(run_dir / "results.csv")
    except (OSError, ValueError) as exc:
        raise InputError(f"{run_dir}: no readable results.csv ({exc})") from None


def _failed_cell(manifest: dict, model: str, fmt: str, precision: str) -> str:
    label = f"export(format={fmt},precision={precision})"
    for cell in manifest.get("failed_cells", []):
        if cell.get("model") == model and cell.get("cell") == label:
            return ": " + " ".join(str(cell.get("error", "")).split())[:120]
    return ""


def select_exports(run_dir: Path, table, spec, manifest: dict, include_failed_parity: bool = False):
    """``([(model, format, int8, parity)], [left-out {model, precision, reason}])`` of the run's TFLite
    and ExecuTorch exports.

    ``parity``: "passed", "failed" (bundled only with ``include_failed_parity``) or "unrecorded" (a run
    from before the ``check_parity`` metric, whose exports had rows only when parity passed).
    """
    rows = table[table.format.isin(list(BUNDLED))]
    planned = sorted({(m.name, ex.format, ex.precision == "int8") for m in spec.models for ex in spec.exports
                      if ex.format in BUNDLED and (ex.models is None or m.name in ex.models)})  # fmt: skip
    found = {(m, f, str(c).endswith("int8")) for m, f, c in zip(rows.model, rows.format, rows.compression, strict=True)}
    selected, left_out = [], []
    for name, fmt, int8 in sorted(set(planned) | found, key=lambda t: (t[1] != "tflite", t)):
        precision = "int8" if int8 else "fp32"
        mine = rows[(rows.model == name) & (rows.format == fmt)
                    & (rows.compression.astype(str).str.endswith("int8") == int8)]  # fmt: skip
        parity = mine[mine.metric == "check_parity"].value
        path = export_file(run_dir, name, fmt, int8)
        reason, status = None, "unrecorded" if parity.empty else ("passed" if (parity == 1.0).all() else "failed")
        if name not in {m.name for m in spec.models}:
            reason = "not a model of the run's suite"
        elif (mine.metric == "export_skipped").any():
            reason = "not exported here (export_skipped: its toolchain or hardware was missing)"
        elif mine.empty:
            reason = f"failed to export (no result rows){_failed_cell(manifest, name, fmt, precision)}"
        elif status == "failed" and not include_failed_parity:
            reason = "failed its parity check (check_parity = 0); --include-failed-parity bundles it"
        elif not path.is_file():
            reason = f"its file {path.relative_to(run_dir)} is missing"
        precision_label = precision if fmt == "tflite" else f"{precision} {fmt}"
        if reason is None:
            selected.append((name, fmt, int8, status))
        else:
            left_out.append({"model": name, "precision": precision_label, "reason": reason})
            log.warning("left out %s [%s]: %s", name, precision_label, reason)
    if not selected:
        why = "; ".join(f"{d['model']} [{d['precision']}] {d['reason']}" for d in left_out)
        raise RobustBenchError(f"{run_dir}: no TFLite or ExecuTorch export to bundle "
                               f"({why or 'add [[exports]] format = tflite'})")  # fmt: skip
    return selected, left_out


def build_bundle(
    run_dir: Path,
    out: Path,
    eval_size: int | None = None,
    accuracy_tol: float = 0.01,
    agreement: float = 0.99,
    adversarial_agreement: float = 0.97,
    force: bool = False,
    include_failed_parity: bool = False,
) -> Path:
    """Write the bundle of ``run_dir``'s TFLite and ExecuTorch exports to ``out`` (new or empty unless ``force``).

    Tolerances the validator applies: |accuracy - expected| <= ``accuracy_tol``; top-1 agreement with
    the predictions made here >= ``agreement`` on clean images and >= ``adversarial_agreement`` on
    adversarial ones, which sit on decision boundaries by construction, so another runtime's int8
    rounding flips more of them (tflite-runtime 2.14 vs ai-edge-litert 2.3: 98.9% on one smoke model).
    ``include_failed_parity``: bundle exports whose parity check failed too (``parity`` in their entry).
    """
    run_dir = run_dir.resolve()
    table = _read_results(run_dir)
    check_out(out, force)
    manifest, spec, data = _run_context(run_dir)
    exports, left_out = select_exports(run_dir, table, spec, manifest, include_failed_parity)
    n = min(eval_size or len(data.y_eval), len(data.y_eval))
    x, y = data.x_eval[:n].numpy().astype(np.float32), data.y_eval[:n].numpy().astype(np.int64)
    specs = {m.name: m for m in spec.models}

    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        stage = Path(tmp) / "bundle"
        (stage / "models").mkdir(parents=True)
        (stage / "data").mkdir()
        np.savez_compressed(stage / EVAL_DATA, x=x, y=y)
        corruptions = _corruption_sets(spec, manifest["seed"], x)
        if corruptions is not None:
            np.savez_compressed(stage / CORRUPTED_DATA, **corruptions[1])  # type: ignore[arg-type]
        entries = []
        for name, fmt, int8, parity in exports:
            path = export_file(run_dir, name, fmt, int8)
            entry = _bundle_model(run_dir, stage, path, specs[name], int8, x, y, n, corruptions)
            entries.append({**entry, "parity": parity})
        source = {"suite": spec.name, "run_id": manifest["run_id"], "dataset": data.name, "images": n,
                  "seed": manifest["seed"], "environment": manifest.get("environment", {})}  # fmt: skip
        tolerances = {"accuracy": accuracy_tol, "agreement": agreement, "adversarial_agreement": adversarial_agreement}
        fields = {"source": source, "tolerances": tolerances, "models": entries, "left_out": left_out}
        if corruptions is not None:
            fields["corruptions"] = corruptions[0]
        seal(stage, out, fields)
    log.info("bundle of %d models, %d images -> %s (%d left out)", len(entries), n, out, len(left_out))
    return out


def check_out(out: Path, force: bool) -> None:
    """Refuse a bundle folder that already holds something, unless ``force``."""
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"{out} exists and is not empty (use --force to replace it)")


def seal(stage: Path, out: Path, fields: dict[str, Any]) -> None:
    """Finish the bundle staged in ``stage`` and move it to ``out`` (replacing it): copy the validator in,
    hash every file, write ``manifest.json`` (``fields`` plus the format number, the creation time, the
    files and the validator) and ``SHA256SUMS``, and log the sha256 of the latter (ship it separately)."""
    validator = stage_validator(stage)
    files = {p.relative_to(stage).as_posix(): sha256(p) for p in sorted(stage.rglob("*")) if p.is_file()}
    manifest = {"format_version": FORMAT_VERSION, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                **fields, "files": files, "validator": validator}  # fmt: skip
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    (stage / SUMS).write_text(sums_text({MANIFEST: sha256(stage / MANIFEST), **validator}))
    log.info("ship this line separately; on the device `sha256sum %s` must print it: %s", SUMS, sha256(stage / SUMS))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(stage), out)


def stage_validator(stage: Path) -> dict[str, str]:
    """Copy the torch-free validator's files into the bundle; ``{path: sha256}``."""
    code_root = Path(robustbench_cnn.__file__).resolve().parent.parent
    hashes = {}
    for rel in VALIDATOR_FILES:
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(code_root / rel, target)
        hashes[rel] = sha256(target)
    return hashes


def _corruption_sets(spec, seed: int, x: np.ndarray) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The run's ``[corruptions]`` sets, regenerated bit-identically from its seed on the bundle's first
    images (as its corruption cells made them): the manifest's ``corruptions`` and the uint8 arrays."""
    settings = spec.section("corruptions")
    if settings is None:
        return None
    k = min(settings.eval_size, len(x))
    arrays, sets = {}, {}
    for name in settings.corruptions:
        for severity in settings.severities:
            key = corruption_key(name, severity)
            arrays[key] = corrupt(x[:k], name, severity, seed)
            sets[key] = {"corruption": name, "severity": severity}
    meta = {"file": CORRUPTED_DATA, "label": f"{SET_NAME}, seed {seed}", "images": k, "sets": sets}
    return meta, arrays


def _bundle_model(run_dir, stage, path, mspec, int8, x, y, n, corruptions) -> dict:
    """Copy one model and its adversarial images; run it here for the reference predictions."""
    precision = "int8" if int8 else "fp32"
    stem = file_stem(mspec.name)  # model names are free text; file names are not
    rel = f"models/{stem}.{precision}{path.suffix}"
    tag = "" if path.suffix == ".tflite" else f".{path.suffix[1:]}"  # two formats of one model: two files
    shutil.copyfile(path, stage / rel)
    model = open_model(stage / rel)
    clean_pred = model.predict(x).argmax(1)
    clean_ok = clean_pred == y
    preds: dict[str, Any] = {"clean": clean_pred.astype(np.int64)}  # arrays by key, for np.savez
    adv_arrays: dict[str, Any] = {}
    attacks, expected_robust = {}, {}
    for key, (params, adv) in _adversarial(run_dir, mspec, n).items():
        pred = model.predict(adv.astype(np.float32)).argmax(1)
        preds[key], attacks[key], adv_arrays[key] = pred.astype(np.int64), params, adv.astype(np.float32)
        expected_robust[key] = float((clean_ok & (pred == y)).mean())
    expected_corruption = {}
    for key, images in (corruptions[1] if corruptions is not None else {}).items():
        pred = model.predict(images.astype(np.float32) / 255).argmax(1)
        preds[f"corruption_{key}"] = pred.astype(np.int64)
        expected_corruption[key] = float((pred == y[: len(images)]).mean())
    pred_rel, adv_rel = f"data/pred-{stem}.{precision}{tag}.npz", f"data/adv-{stem}.npz"
    np.savez_compressed(stage / pred_rel, **preds)
    if adv_arrays and not (stage / adv_rel).exists():
        np.savez_compressed(stage / adv_rel, **adv_arrays)
    compression = mspec.compression
    if int8:
        compression = "int8" if compression == "none" else f"{compression}+int8"
    log.info("%s [%s]: clean %.4f here on %d images", mspec.name, precision, float(clean_ok.mean()), n)
    return {
        "model": mspec.name, "arch": mspec.arch, "defense": mspec.defense_name, "compression": compression,
        "precision": precision, "file": rel, "predictions": pred_rel, "adversarial": adv_rel if adv_arrays else None,
        "attacks": attacks, "expected": {"clean_acc": float(clean_ok.mean()), "robust_acc": expected_robust,
                                         "corruption_acc": expected_corruption},
    }  # fmt: skip
