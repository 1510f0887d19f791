"""Validate an edge bundle on the device: checksums, accuracy against expectations, latency.

Standard library + numpy + the models' runtimes only (a TFLite runtime; ONNX Runtime for an ``.onnx``
artifact), no torch, no pandas. An ExecuTorch ``.pte`` needs torch (its runtime links libtorch): where a
model's runtime is not installed it is skipped with a line saying what to install, and the others are
validated; where no selected model can run, that is an error (exit 2). Exit status: 0 every model
matches its expectation; 1 a model runs but misses (accuracy or agreement outside tolerance);
2 the bundle is invalid (malformed manifest, a path leaving the bundle, a missing or tampered file,
a modified validator, arrays of the wrong shape), in which case no model is run and nothing is
written. Order: manifest (:mod:`robustbench_cnn.edge.manifest`), the validator's own files
(:mod:`robustbench_cnn.edge.selfcheck`), the output folder, every file's sha256, every array's
header (:mod:`robustbench_cnn.edge.arrays`) and every model's load; only then does anything run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustbench_cnn.contract.schema import COLUMNS
from robustbench_cnn.edge.arrays import load_arrays
from robustbench_cnn.edge.bundle_format import EVAL_DATA, MAX_MODEL_BYTES
from robustbench_cnn.edge.manifest import BundleError, Manifest, ModelEntry, read_manifest, verify_files
from robustbench_cnn.edge.models import FORMATS, OnnxFile, file_input, missing_runtime, open_model
from robustbench_cnn.edge.selfcheck import check_self, code_root, own_hashes, sums_digest
from robustbench_cnn.runtime.executorch_runtime import ExecutorchModel
from robustbench_cnn.runtime.tflite_runtime import TfliteModel, interpreter_class

__all__ = ["BundleError", "ModelResult", "validate"]

log = logging.getLogger(__name__)
DISTRIBUTIONS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime", "onnxruntime": "onnxruntime",
                 "executorch": "executorch"}  # fmt: skip


@dataclass
class ModelResult:
    model: str
    precision: str
    label: str = ""  # model [precision] (and the format where it is not TFLite)
    rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class _Prepared:
    """One model ready to run: loaded runtime, reference predictions, adversarial images."""

    entry: ModelEntry
    model: TfliteModel | OnnxFile | ExecutorchModel
    size: int
    preds: dict[str, np.ndarray]
    adv: dict[str, np.ndarray]

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits for the bundle's images (float32 NCHW in [0, 1]) given as the file's input contract says."""
        return self.model.predict(as_input(images, self.entry))


def as_input(images: np.ndarray, entry: ModelEntry) -> np.ndarray:
    """Images ``(N, C, H, W)`` in [0, 1] in the layout and range of ``entry``'s file."""
    return file_input(images, entry.layout == "NHWC", entry.input_scale)


def _prepare(m: Manifest, entry: ModelEntry, x: np.ndarray, threads: int | None) -> _Prepared:
    """Load one model and its arrays, checking every shape against the eval images; runs nothing."""
    f, n = f"models[{entry.index}]", len(x)
    keys = sorted(entry.attacks)
    pred_path = m.locate(entry.predictions, f"{f}.predictions")
    expect: dict[str, tuple[str, tuple[int | None, ...]]] = {k: ("<i8", (n,)) for k in ["clean", *keys]}
    if m.corruptions is not None:
        expect |= {f"corruption_{k}": ("<i8", (m.corruptions.images,)) for k in m.corruptions.sets}
    preds = load_arrays(pred_path, m.bundle / entry.predictions, expect)
    adv = {}
    if entry.adversarial is not None:
        adv_path = m.locate(entry.adversarial, f"{f}.adversarial")
        adv = load_arrays(adv_path, m.bundle / entry.adversarial, {k: ("<f4", x.shape) for k in keys})
    path = m.locate(entry.file, f"{f}.file")
    size = path.stat().st_size
    where = m.bundle / entry.file
    if size > MAX_MODEL_BYTES:
        raise BundleError(where, f"{f}.file", f"{size} bytes (> {MAX_MODEL_BYTES} allowed for a model)")
    try:
        model = open_model(path, threads=threads)
    except (ValueError, RuntimeError, IndexError) as exc:
        kind = FORMATS[path.suffix]
        raise BundleError(where, f"{f}.file", f"not a loadable {kind} model ({str(exc)[:100]})") from None
    shape = tuple(as_input(x[:1], entry).shape[1:])  # the bundle's images as this file takes them
    if model.sample_shape != shape or n % model.batch:
        problem = f"takes {model.batch} x {model.sample_shape} images; the bundle's are {n} x {shape} ({entry.layout})"
        raise BundleError(where, f"{f}.file", problem)
    try:  # one invocation: a model that loads but cannot run, or gives no (N, K) logits, stops here
        logits = model.predict(as_input(x[: model.batch], entry))
    except (ValueError, RuntimeError) as exc:
        raise BundleError(where, f"{f}.file", f"the model does not run ({str(exc)[:100]})") from None
    if logits.ndim != 2:
        raise BundleError(where, f"{f}.file", f"outputs shape {logits.shape}, not (N, classes) logits")
    return _Prepared(entry, model, size, preds, adv)


def _corrupted(m: Manifest, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The bundle's corrupted sets ``{key: uint8 (images, C, H, W)}`` (none without ``corruptions``)."""
    if m.corruptions is None:
        return {}
    c = m.corruptions
    path = m.locate(c.file, "corruptions.file")
    return load_arrays(path, m.bundle / c.file, {k: ("|u1", (c.images, *shape)) for k in c.sets})


def _corruption_checks(p: _Prepared, y: np.ndarray, m: Manifest, sets: dict[str, np.ndarray], row) -> list:
    """``corruption_acc`` per set and their mean, as rows; the (metric, key, got, want, pred, ref) checks."""
    if m.corruptions is None:
        return []
    checks, accs = [], []
    k = m.corruptions.images
    for key, (corruption, severity) in sorted(m.corruptions.sets.items()):
        pred = p.logits(sets[key].astype(np.float32) / 255).argmax(1)
        acc = float((pred == y[:k]).mean())
        accs.append(acc)
        row("corruption_acc", acc, attack=corruption, norm="corruption", eps=float(severity), n=k)
        checks.append(("corruption_acc", key, acc, p.entry.corruption_acc[key], pred, p.preds[f"corruption_{key}"]))
    row("mean_corruption_acc", float(np.mean(accs)), attack="mean", norm="corruption", n=k)
    return checks


def _run(p: _Prepared, x: np.ndarray, y: np.ndarray, m: Manifest, opts: dict) -> ModelResult:
    """Run one model on the clean and adversarial images and compare with the manifest's expectations."""
    e, tol = p.entry, m.tolerances
    res = ModelResult(e.model, e.precision, e.label)
    base = {"model": e.model, "arch": e.arch, "defense": e.defense, "compression": e.compression,
            "format": e.format, "runtime": p.model.runtime, "device": "cpu"}  # fmt: skip

    def row(metric: str, value: float, **extra: object) -> None:
        res.rows.append({**base, "metric": metric, "value": float(value), **extra})

    clean_pred = p.logits(x).argmax(1)
    clean_ok = clean_pred == y
    checks: list[tuple[str, str | None, float, float, Any, Any]] = [
        ("clean_acc", None, float(clean_ok.mean()), e.clean_acc, clean_pred, p.preds["clean"])
    ]
    row("clean_acc", clean_ok.mean(), n=len(y))
    for key, attack in sorted(e.attacks.items()):
        pred = p.logits(p.adv[key]).argmax(1)
        robust = float((clean_ok & (pred == y)).mean())
        row("robust_acc", robust, attack=attack.attack, norm=attack.norm, eps=attack.eps, n=len(y))
        checks.append(("robust_acc", key, robust, e.robust_acc[key], pred, p.preds[key]))
    checks += _corruption_checks(p, y, m, opts["corrupted"], row)  # corrupted images: tolerated as adversarial
    for metric, which, got, want, pred, ref in checks:
        label = metric if which is None else f"{metric} {which}"
        agreement = float((pred == ref).mean())
        need = tol.agreement if which is None else tol.adversarial_agreement
        if abs(got - want) > tol.accuracy:
            res.failures.append(f"{label} {got:.4f}, expected {want:.4f} +- {tol.accuracy}")
        if agreement < need:
            res.failures.append(f"{label}: top-1 agreement with the reference run {agreement:.4f} < {need}")
    row("size_bytes", p.size)
    if opts["latency"]:
        s = p.model.latency(opts["warmup"], opts["min_repeats"], opts["budget_s"])
        for metric, value in (("latency_ms_p50", s.p50_ms), ("latency_ms_p90", s.p90_ms),
                              ("latency_ms_p99", s.p99_ms), ("throughput", s.throughput)):  # fmt: skip
            row(metric, value, n=s.repeats, batch_size=s.batch_size)
    return res


def _version(runtime: str) -> str:
    try:
        from importlib.metadata import version as pkg_version

        return pkg_version(DISTRIBUTIONS[runtime])
    except Exception:  # noqa: BLE001 (a missing distribution record is not an error here)
        return "unknown"


def environment(formats: tuple[str, ...] = ("tflite",)) -> dict:
    """The device's machine, Python, numpy and the runtimes of ``formats`` (joined with ``+``, e.g.
    ``ai_edge_litert+onnxruntime``); no TFLite runtime for a ``.tflite``: ImportError."""
    runtimes = [interpreter_class()[1]] if "tflite" in formats else []
    runtimes += ["onnxruntime"] if "onnx" in formats else []
    runtimes += ["executorch"] if "executorch" in formats else []
    return {"machine": platform.machine(), "system": platform.system(), "python": platform.python_version(),
            "numpy": np.__version__, "runtime": "+".join(runtimes),
            "runtime_version": "+".join(_version(r) for r in runtimes),
            "cpu_count": os.cpu_count(), "processor": platform.processor()}  # fmt: skip


def check_output(m: Manifest, out: Path) -> None:
    """Refuse an output that writes through a symbolic link or, inside the bundle, leaves it."""
    fix = "pass --out to a plain folder outside the bundle, or remove the link"
    for path in (out, out.parent):
        if path.is_symlink():
            raise BundleError(path, "--out", "is a symbolic link (the validator does not write through links)", fix)
    if out.is_dir():
        raise BundleError(out, "--out", "is a directory", "pass a file name such as results.csv")
    if out.absolute().is_relative_to(m.bundle.absolute()) and not out.parent.resolve().is_relative_to(m.root):
        raise BundleError(out.parent, "--out", "resolves outside the bundle (a symbolic link leaves it)", fix)


def _write_atomic(path: Path, write) -> None:
    """``write(fh)`` into a new temporary file beside ``path``, then rename it over ``path`` (never follows links)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_rows(path: Path, rows: list[dict]) -> None:
    """The results contract's columns, in order; missing fields are empty cells."""

    def write(fh) -> None:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in COLUMNS})

    _write_atomic(path, write)


def _selected(m: Manifest, models: list[str] | None) -> list[ModelEntry]:
    names = {e.model for e in m.models}
    for name in models or []:
        if name not in names:
            raise BundleError(m.bundle, "--model", f"no model {name!r} in the bundle", f"choose from {sorted(names)}")
    return [e for e in m.models if not models or e.model in models]


def _runnable(entries: list[ModelEntry]) -> tuple[list[ModelEntry], dict[str, str]]:
    """The entries whose runtime is installed here, and ``{label: what to install}`` for the others
    (each logged); ImportError where none can run."""
    runnable, skipped = [], {}
    for e in entries:
        missing = missing_runtime(Path(e.file).suffix)
        if missing is None:
            runnable.append(e)
        else:
            skipped[e.label] = f"no {FORMATS[Path(e.file).suffix]} runtime here ({missing})"
            log.warning("%s skipped: %s", e.label, skipped[e.label])
    if not runnable:
        raise ImportError(f"no runtime here for the bundle's models: {'; '.join(sorted(set(skipped.values())))}")
    return runnable, skipped


def validate(bundle: Path, out: Path, threads: int | None = None, latency: bool = True, budget_s: float = 1.0,
             models: list[str] | None = None) -> tuple[list[ModelResult], dict]:  # fmt: skip
    """Verify and run the bundle; write ``out`` (CSV) and ``out``.json (environment, failures)."""
    m = read_manifest(bundle)
    hashes = own_hashes()
    check_self(m, hashes)
    check_output(m, out)
    verify_files(m)
    n = m.source["images"]
    data = load_arrays(m.locate(EVAL_DATA, "files"), bundle / EVAL_DATA, {"x": ("<f4", (n, None, None, None)),
                                                                          "y": ("<i8", (n,))})  # fmt: skip
    x, y = data["x"], data["y"]
    selected, skipped = _runnable(_selected(m, models))
    env = {**environment(tuple(sorted({e.format for e in selected}))), "skipped": skipped}
    prepared = [_prepare(m, e, x, threads) for e in selected]
    if m.left_out:
        log.info("left out by the bundler: %s", "; ".join(f"{d['model']} [{d['precision']}]: {d['reason']}"
                                                          for d in m.left_out))  # fmt: skip
    digest = sums_digest(m, hashes)
    log.info("validator: its %d files match the manifest; SHA256SUMS sha256 %s", len(hashes), digest)
    run_id = f"edge-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    opts = {"latency": latency, "budget_s": budget_s, "warmup": 5, "min_repeats": 20,
            "corrupted": _corrupted(m, tuple(x.shape[1:]))}  # fmt: skip
    results = []
    for p in prepared:
        log.info("validating %s (%s)", p.entry.model, p.entry.precision)
        results.append(_run(p, x, y, m, opts))
    common = {"run_id": run_id, "suite": m.source["suite"], "dataset": m.source["dataset"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    check_output(m, out)  # again, now that the folder exists
    write_rows(out, [{**common, **r} for res in results for r in res.rows])
    report = {"run_id": run_id, "bundle": str(m.root), "source": m.source, "environment": env,
              "validator": str(code_root() / "robustbench_cnn"), "left_out": list(m.left_out),
              "sha256sums": digest,
              "failures": {r.label: r.failures for r in results if r.failures}}  # fmt: skip
    _write_atomic(out.with_suffix(".json"), lambda fh: fh.write(json.dumps(report, indent=2, sort_keys=True)))
    return results, env
