"""Validate an edge bundle on the device: checksums, accuracy against expectations, latency.

Standard library + numpy + a TFLite runtime only (no torch, no pandas). Exit status: 0 every model
matches its expectation; 1 a model runs but misses (accuracy or agreement outside tolerance);
2 the bundle is invalid (missing or tampered file, malformed manifest), in which case no model is run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustbench_cnn.edge.bundle_format import EVAL_DATA, FORMAT_VERSION, MANIFEST, sha256
from robustbench_cnn.runtime.tflite_runtime import TfliteModel, interpreter_class
from robustbench_cnn.schema import COLUMNS

log = logging.getLogger(__name__)


class BundleError(Exception):
    """The bundle cannot be trusted or read (exit 2)."""


@dataclass
class ModelResult:
    model: str
    precision: str
    rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def read_manifest(bundle: Path) -> dict:
    path = bundle / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: no manifest.json; is {bundle} an edge bundle?") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise BundleError(f"{path}: bundle format {found!r}, this validator reads format {FORMAT_VERSION}")
    for key in ("files", "models", "tolerances"):
        if key not in manifest:
            raise BundleError(f"{path}: manifest has no '{key}'")
    return manifest


def verify_files(bundle: Path, files: dict[str, str]) -> None:
    """Every listed file exists and has its recorded sha256; otherwise BundleError naming each bad file."""
    bad = []
    root = bundle.resolve()
    for rel, digest in sorted(files.items()):
        path = (bundle / rel).resolve()
        if root not in path.parents:
            bad.append(f"{rel}: path leaves the bundle")
        elif not path.is_file():
            bad.append(f"{rel}: missing")
        elif sha256(path) != digest:
            bad.append(f"{rel}: sha256 mismatch (the file was modified or corrupted)")
    if bad:
        raise BundleError(f"bundle {bundle} failed verification: {'; '.join(bad)}")


def _load_npz(bundle: Path, rel: str) -> dict[str, np.ndarray]:
    try:
        with np.load(bundle / rel, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{bundle / rel}: unreadable arrays ({exc})") from None


def validate_model(bundle: Path, entry: dict, x: np.ndarray, y: np.ndarray, tol: dict, opts: dict) -> ModelResult:
    """Run one model on the clean and adversarial images and compare with the manifest's expectations."""
    res = ModelResult(entry["model"], entry["precision"])
    model = TfliteModel(bundle / entry["file"], threads=opts["threads"])
    expected = entry["expected"]
    preds = _load_npz(bundle, entry["predictions"])
    adv = _load_npz(bundle, entry["adversarial"]) if entry.get("adversarial") else {}
    base = {k: entry.get(k, "none") for k in ("model", "arch", "defense", "compression")}
    base.update(format="tflite", runtime=model.runtime, device="cpu")

    def row(metric: str, value: float, **extra) -> None:
        res.rows.append({**base, "metric": metric, "value": float(value), **extra})

    clean_pred = model.predict(x).argmax(1)
    clean_ok = clean_pred == y
    checks = [("clean_acc", None, float(clean_ok.mean()), expected["clean_acc"], clean_pred, preds["clean"])]
    row("clean_acc", clean_ok.mean(), n=len(y))
    for key, attack in sorted(entry.get("attacks", {}).items()):
        pred = model.predict(adv[key]).argmax(1)
        robust = float((clean_ok & (pred == y)).mean())
        row("robust_acc", robust, attack=attack["attack"], norm=attack["norm"], eps=attack["eps"], n=len(y))
        checks.append(("robust_acc", key, robust, expected["robust_acc"][key], pred, preds[key]))
    for metric, key, got, want, pred, ref in checks:
        name = metric if key is None else f"{metric} {key}"
        agreement = float((pred == ref).mean())
        need = tol["agreement"] if key is None else tol["adversarial_agreement"]
        if abs(got - want) > tol["accuracy"]:
            res.failures.append(f"{name} {got:.4f}, expected {want:.4f} +- {tol['accuracy']}")
        if agreement < need:
            res.failures.append(f"{name}: top-1 agreement with the reference run {agreement:.4f} < {need}")
    row("size_bytes", (bundle / entry["file"]).stat().st_size)
    if opts["latency"]:
        s = model.latency(opts["warmup"], opts["min_repeats"], opts["budget_s"])
        for metric, value in (("latency_ms_p50", s.p50_ms), ("latency_ms_p90", s.p90_ms),
                              ("latency_ms_p99", s.p99_ms), ("throughput", s.throughput)):  # fmt: skip
            row(metric, value, n=s.repeats, batch_size=s.batch_size)
    return res


def environment() -> dict:
    _, runtime = interpreter_class()
    version = "unknown"
    try:
        from importlib.metadata import version as pkg_version

        version = pkg_version({"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}[runtime])
    except Exception:  # noqa: BLE001 (a missing distribution record is not an error here)
        pass
    return {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "numpy": np.__version__, "runtime": runtime, "runtime_version": version,
            "cpu_count": os.cpu_count(), "processor": platform.processor()}  # fmt: skip


def write_rows(path: Path, rows: list[dict]) -> None:
    """The results contract's columns, in order; missing fields are empty cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in COLUMNS})
    os.replace(tmp, path)


def validate(bundle: Path, out: Path, threads: int | None = None, latency: bool = True, budget_s: float = 1.0,
             models: list[str] | None = None) -> tuple[list[ModelResult], dict]:  # fmt: skip
    """Verify and run the bundle; write ``out`` (CSV) and ``out``.json (environment, failures)."""
    manifest = read_manifest(bundle)
    verify_files(bundle, manifest["files"])
    data = _load_npz(bundle, EVAL_DATA)
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
    env = environment()
    run_id = f"edge-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    opts = {"threads": threads, "latency": latency, "budget_s": budget_s, "warmup": 5, "min_repeats": 20}
    results = []
    for entry in manifest["models"]:
        if models and entry["model"] not in models:
            continue
        log.info("validating %s (%s)", entry["model"], entry["precision"])
        results.append(validate_model(bundle, entry, x, y, manifest["tolerances"], opts))
    common = {"run_id": run_id, "suite": manifest["source"]["suite"], "dataset": manifest["source"]["dataset"]}
    write_rows(out, [{**common, **r} for res in results for r in res.rows])
    report = {"run_id": run_id, "bundle": str(bundle.resolve()), "source": manifest["source"], "environment": env,
              "validator": str(Path(__file__).resolve().parent),
              "failures": {f"{r.model}.{r.precision}": r.failures for r in results if r.failures}}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return results, env
