"""``robustbench-cnn edge bundle RUN_DIR --out DIR``: package a run's TFLite models for the device.

The bundle holds every ``.tflite`` export of the run, the evaluation images (clean, and the
adversarial ones crafted on each float model), the predictions the models gave here (the
reference), expected accuracies with tolerances, the sha256 of every file, and a copy of the
torch-free validator (layout: ``robustbench_cnn.edge.bundle_format``). Expectations are computed
by running each .tflite file on the bundled images, so they hold exactly for the images shipped.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import robustbench_cnn
from robustbench_cnn.edge.bundle_format import EVAL_DATA, FORMAT_VERSION, MANIFEST, attack_key, sha256
from robustbench_cnn.errors import InputError, RobustBenchError
from robustbench_cnn.runtime.tflite_runtime import TfliteModel

log = logging.getLogger(__name__)

VALIDATOR_FILES = (
    "__init__.py", "schema.py", "edge/__init__.py", "edge/__main__.py", "edge/validate.py", "edge/bundle_format.py",
    "runtime/__init__.py", "runtime/timing.py", "runtime/tflite_runtime.py",
)  # fmt: skip


def _run_context(run_dir: Path):
    """(manifest, suite spec, dataset) of a finished run; the dataset must match its fingerprint."""
    from robustbench_cnn.data import load_dataset
    from robustbench_cnn.suite.load import load_suite

    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{run_dir}: not a run directory (manifest.json: {exc})") from None
    loaded = load_suite(Path(manifest["suite_path"]))
    data = load_dataset(loaded.spec.dataset, loaded.resolve(loaded.spec.dataset.data_dir))
    if data.fingerprint != manifest["dataset"]["fingerprint"]:
        raise RobustBenchError(f"{run_dir}: the data set on disk differs from the one the run used")
    return manifest, loaded.spec, data


def _adversarial(run_dir: Path, spec, mspec, manifest, data, n: int) -> dict[str, tuple[dict, np.ndarray]]:
    """``{attack key: (attack params, adversarial images[:n])}`` stored by the run's attack cells."""
    from robustbench_cnn.suite.cells import plan

    key, seed = manifest["models"][mspec.name]["key"], manifest["seed"]
    out = {}
    for cell in plan(spec, mspec):
        path = run_dir / "cells" / f"{cell.cell_id(key, data.fingerprint, seed)}.adv.npy"
        if cell.kind == "attack" and path.is_file():
            p = dict(cell.params)
            params = {"attack": p["attack"], "norm": p["norm"], "eps": p["eps"]}
            out[attack_key(p["attack"], p["norm"], p["eps"])] = (params, np.load(path, allow_pickle=False)[:n])
    return out


def _passed_exports(run_dir: Path) -> list[tuple[str, bool]]:
    """(model, int8) of the run's TFLite exports that passed their parity check (they have rows)."""
    from robustbench_cnn.suite.results import read_csv

    try:
        df = read_csv(run_dir / "results.csv")
    except (OSError, ValueError) as exc:
        raise InputError(f"{run_dir}: no readable results.csv ({exc})") from None
    rows = df[(df.format == "tflite") & (df.metric == "parity_top1_agreement")]
    exports = sorted({(m, str(c).endswith("int8")) for m, c in zip(rows.model, rows.compression, strict=True)})
    if not exports:
        raise RobustBenchError(f'{run_dir}: no TFLite export passed parity (add [[exports]] format = "tflite")')
    return exports


def build_bundle(
    run_dir: Path,
    out: Path,
    eval_size: int | None = None,
    accuracy_tol: float = 0.01,
    agreement: float = 0.99,
    adversarial_agreement: float = 0.97,
    force: bool = False,
) -> Path:
    """Write the bundle of ``run_dir``'s TFLite exports to ``out`` (new or empty unless ``force``).

    Tolerances the validator applies: |accuracy - expected| <= ``accuracy_tol``; top-1 agreement with
    the predictions made here >= ``agreement`` on clean images and >= ``adversarial_agreement`` on
    adversarial ones, which sit on decision boundaries by construction, so another runtime's int8
    rounding flips more of them (tflite-runtime 2.14 vs ai-edge-litert 2.3: 98.9% on one smoke model).
    """
    run_dir = run_dir.resolve()
    exports = _passed_exports(run_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"{out} exists and is not empty (use --force to replace it)")
    manifest, spec, data = _run_context(run_dir)
    n = min(eval_size or len(data.y_eval), len(data.y_eval))
    x, y = data.x_eval[:n].numpy().astype(np.float32), data.y_eval[:n].numpy().astype(np.int64)
    specs = {m.name: m for m in spec.models}

    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        stage = Path(tmp) / "bundle"
        (stage / "models").mkdir(parents=True)
        (stage / "data").mkdir()
        np.savez_compressed(stage / EVAL_DATA, x=x, y=y)
        entries = []
        for name, int8 in exports:
            if name not in specs:
                raise RobustBenchError(f"{run_dir}: model '{name}' is not in the run's suite file any more")
            path = run_dir / "exports" / f"{name}{'.int8' if int8 else ''}.tflite"
            entries.append(_bundle_model(run_dir, stage, path, specs[name], int8, spec, manifest, data, x, y, n))
        pkg = Path(robustbench_cnn.__file__).parent
        for rel in VALIDATOR_FILES:
            target = stage / "robustbench_cnn" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pkg / rel, target)
        files = {p.relative_to(stage).as_posix(): sha256(p) for p in sorted(stage.rglob("*")) if p.is_file()}
        bundle_manifest = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {
                "suite": spec.name,
                "run_id": manifest["run_id"],
                "dataset": data.name,
                "images": n,
                "seed": manifest["seed"],
                "environment": manifest.get("environment", {}),
            },  # fmt: skip
            "tolerances": {
                "accuracy": accuracy_tol,
                "agreement": agreement,
                "adversarial_agreement": adversarial_agreement,
            },  # fmt: skip
            "models": entries,
            "files": files,
        }
        (stage / MANIFEST).write_text(json.dumps(bundle_manifest, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stage), out)
    log.info("bundle of %d models, %d images -> %s", len(entries), n, out)
    return out


def _bundle_model(run_dir, stage, path, mspec, int8, spec, manifest, data, x, y, n) -> dict:
    """Copy one model and its adversarial images; run it here for the reference predictions."""
    precision = "int8" if int8 else "fp32"
    rel = f"models/{mspec.name}.{precision}.tflite"
    shutil.copyfile(path, stage / rel)
    model = TfliteModel(stage / rel)
    clean_pred = model.predict(x).argmax(1)
    clean_ok = clean_pred == y
    preds, attacks, expected_robust, adv_arrays = {"clean": clean_pred}, {}, {}, {}
    for key, (params, adv) in _adversarial(run_dir, spec, mspec, manifest, data, n).items():
        pred = model.predict(adv.astype(np.float32)).argmax(1)
        preds[key], attacks[key], adv_arrays[key] = pred, params, adv.astype(np.float32)
        expected_robust[key] = float((clean_ok & (pred == y)).mean())
    pred_rel, adv_rel = f"data/pred-{mspec.name}.{precision}.npz", f"data/adv-{mspec.name}.npz"
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
        "attacks": attacks, "expected": {"clean_acc": float(clean_ok.mean()), "robust_acc": expected_robust},
    }  # fmt: skip
