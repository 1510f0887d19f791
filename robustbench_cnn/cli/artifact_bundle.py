"""``robustbench-cnn edge bundle --artifact MODEL.tflite|MODEL.onnx --data EVAL.npz|DATASET --out DIR``:
bundle an edge build made by any toolchain (no run, no torch weights) for the device, like the bundles
of our own exports.

The eval set (:func:`eval_set`) is an ``.npz`` of ``x`` uint8 ``(N, H, W, C)`` and integer ``y`` ``(N,)``
(the zoo's CIFAR-10 test images are one), or the name of a dataset of the registry (``mnist``,
``cifar10``, ...: its eval split, loaded from ``--data-dir`` as ``zoo measure --dataset`` and a suite's
``[dataset]`` load it). ``--eval-size N`` keeps the first N images of an ``.npz``, or the seeded subset
of N a suite's ``dataset.eval_size = N`` evaluates. The artifact's input contract: its layout and dtype
are read from the file, a ``.tflite``'s quantization (scale, zero point) too; its pixel range (``0..1``
or ``0..255``) is declared with ``--input-range`` (a file does not say it). On the host the artifact is
measured on its own runtime (LiteRT, or ONNX Runtime's CPU provider;
:func:`robustbench_cnn.measures.artifact.measure_artifact`: clean accuracy, macro F1, size, batch-1
latency and, per ``--eps``, the direct Square Attack); those rows are the bundle's ``host/results.csv``,
and the clean predictions and accuracy are what the device must reproduce.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from robustbench_cnn.cli.bundle import check_out, seal
from robustbench_cnn.config.spec import DatasetSpec
from robustbench_cnn.contract.results import Row, frame, write_csv
from robustbench_cnn.data import DATASETS, load_dataset
from robustbench_cnn.edge.bundle_format import EVAL_DATA, file_stem
from robustbench_cnn.engine.runner import new_run_id
from robustbench_cnn.errors import InputError, did_you_mean
from robustbench_cnn.measures.artifact import measure_artifact, open_artifact
from robustbench_cnn.measures.artifact_base import Artifact

log = logging.getLogger(__name__)
HOST_RESULTS = "host/results.csv"
NPZ_FIX = "give an .npz with x uint8 (N, H, W, C) and integer y (N,), e.g. np.savez(path, x=x, y=y)"


@dataclass(frozen=True)
class EvalSet:
    """The images a bundle ships: ``x`` float32 ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``."""

    name: str  # the dataset's name, or the .npz file's stem
    where: str  # how a message names it: the file, or "--data NAME"
    x: np.ndarray
    y: np.ndarray
    num_classes: int


def read_eval_set(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as float32 ``(N, C, H, W)`` in [0, 1] and ``y`` int64 from an ``.npz`` of uint8 ``x``
    ``(N, H, W, C)`` and integer ``y``; one line naming the file and the fix for anything else."""
    if not path.is_file():
        raise InputError(f"{path}: --data: no such file; {NPZ_FIX}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files or "y" not in data.files:
                raise InputError(f"{path}: --data has arrays {sorted(data.files)[:8]}, not x and y; {NPZ_FIX}")
            x, y = data["x"], data["y"]
    except (OSError, ValueError, EOFError) as exc:  # object arrays: "Object arrays cannot be loaded ..."
        raise InputError(f"{path}: --data is not a plain .npz ({str(exc).splitlines()[0][:100]}); {NPZ_FIX}") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise InputError(f"{path}: x is {x.dtype} {tuple(x.shape)}, not uint8 (N, H, W, C) with 1 or 3 channels; "
                         f"{NPZ_FIX}")  # fmt: skip
    if not len(x):
        raise InputError(f"{path}: x holds no images; {NPZ_FIX}")
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
        raise InputError(f"{path}: y is {y.dtype} {tuple(y.shape)}, not integer labels ({len(x)},); {NPZ_FIX}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) / 255, y.astype(np.int64)


def eval_set(data: str, data_dir: Path | None = None, eval_size: int | None = None) -> EvalSet:
    """The eval set ``--data`` names: an ``.npz`` file (or any existing file), else a registered dataset's
    eval split read from ``data_dir`` (:func:`robustbench_cnn.data.load_dataset`, as ``zoo measure`` does)."""
    if eval_size is not None and eval_size < 1:
        raise InputError(f"--eval-size {eval_size}: give a number of images >= 1")
    path = Path(data)
    if path.suffix.lower() == ".npz" or path.is_file():
        x, y = read_eval_set(path.resolve())
        x, y = x[:eval_size], y[:eval_size]
        return EvalSet(path.stem, str(path.resolve()), x, y, int(y.max()) + 1)
    if data == "npz" or data not in DATASETS:
        choices = did_you_mean(data, [n for n in DATASETS.names() if n != "npz"])
        raise InputError(f"--data {data!r}: neither an .npz file nor a registered dataset; give the path of an .npz "
                         f"(x uint8 (N, H, W, C), y) or a dataset name{choices}")  # fmt: skip
    loaded = load_dataset(DatasetSpec(name=data, eval_size=eval_size), data_dir)
    x, y = loaded.x_eval.numpy(), loaded.y_eval.numpy().astype(np.int64)
    return EvalSet(data, f"--data {data}", np.ascontiguousarray(x, dtype=np.float32), y, loaded.num_classes)


def _check_fit(model: Artifact, data: EvalSet, logits: np.ndarray) -> None:
    """The eval set's images are what the artifact takes and its labels within the artifact's outputs."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise InputError(f"{model.path}: outputs shape {tuple(logits.shape)}, not (N, classes) logits; give an "
                         "image classifier")  # fmt: skip
    if int(data.y.max()) >= logits.shape[1]:
        raise InputError(f"{model.path}: gives {logits.shape[1]} logits; {data.where} has labels up to "
                         f"{int(data.y.max())}; give the eval set the artifact was built for")  # fmt: skip


def _open(artifact: Path, data: EvalSet, input_range: str) -> Artifact:
    model = open_artifact(artifact, input_range)
    if tuple(data.x.shape[1:]) != tuple(model.image_shape):
        raise InputError(f"{artifact}: takes {tuple(model.image_shape)} images (C, H, W); {data.where} holds "
                         f"{tuple(data.x.shape[1:])}; give the eval set the artifact was built for")  # fmt: skip
    return model


def build_artifact_bundle(
    artifact: Path,
    data: str | Path,
    out: Path,
    input_range: str = "0..1",
    eps: tuple[float, ...] = (),
    queries: int = 100,
    accuracy_tol: float = 0.01,
    agreement: float = 0.99,
    force: bool = False,
    data_dir: Path | None = None,
    eval_size: int | None = None,
) -> Path:
    """Write the bundle of one ``.tflite`` or ``.onnx`` ``artifact`` on the eval set ``data`` (an ``.npz``
    path or a dataset name, see :func:`eval_set`) to ``out``."""
    check_out(out, force)
    ev = eval_set(str(data), data_dir, eval_size)
    model = _open(artifact, ev, input_range)
    logits = model.predict(ev.x)
    _check_fit(model, ev, logits)
    pred = logits.argmax(1)
    name, precision = artifact.stem, model.precision
    compression = "int8" if model.quantized else "none"
    row = partial(Row, run_id=new_run_id(), suite="artifact", dataset=ev.name, model=name, arch="artifact",
                  compression=compression, format=model.format, runtime=model.runtime)  # fmt: skip
    num_classes = max(ev.num_classes, int(ev.y.max()) + 1)
    rows = measure_artifact(model, ev.x, ev.y, row, eps=eps, queries=queries, num_classes=num_classes, pred=pred)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        stage = Path(tmp) / "bundle"
        for folder in ("models", "data", "host"):
            (stage / folder).mkdir(parents=True)
        stem = f"{file_stem(name)}.{precision}"
        rel, pred_rel = f"models/{stem}.{model.format}", f"data/pred-{stem}.npz"
        shutil.copyfile(artifact, stage / rel)
        np.savez_compressed(stage / EVAL_DATA, x=ev.x, y=ev.y)
        np.savez_compressed(stage / pred_rel, clean=pred.astype(np.int64))
        write_csv(frame(rows), stage / HOST_RESULTS)
        entry = {"model": name, "arch": "artifact", "defense": "none", "compression": compression,
                 "precision": precision, "file": rel,
                 "predictions": pred_rel, "adversarial": None, "attacks": {}, "parity": "unrecorded",
                 "expected": {"clean_acc": float((pred == ev.y).mean()), "robust_acc": {}},
                 "input": {"layout": model.layout, "range": input_range}}  # fmt: skip
        source = {"suite": "artifact", "run_id": "none", "dataset": ev.name, "images": len(ev.y), "seed": 0,
                  "environment": {}}  # fmt: skip
        tolerances = {"accuracy": accuracy_tol, "agreement": agreement, "adversarial_agreement": agreement}
        seal(stage, out, {"source": source, "tolerances": tolerances, "models": [entry], "left_out": []})
    log.info("bundle of %s (%s %s, %s input, %s) on %d images: clean %.4f here -> %s", name, model.format, precision,
             model.layout, input_range, len(ev.y), float((pred == ev.y).mean()), out)  # fmt: skip
    return out
