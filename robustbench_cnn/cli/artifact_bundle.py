"""``robustbench-cnn edge bundle --artifact MODEL.tflite --data EVAL.npz --out DIR``: bundle an edge build
made by any toolchain (no run, no torch weights) for the device, like the bundles of our own exports.

The eval set is an ``.npz`` of ``x`` uint8 ``(N, H, W, C)`` and integer ``y`` ``(N,)`` (the zoo's CIFAR-10
test images are one). The artifact's input contract: its layout and dtype are read from the file, its
quantization (scale, zero point) too; its pixel range (``0..1`` or ``0..255``) is declared with
``--input-range`` (a file does not say it). On the host the artifact is measured on its own LiteRT
runtime (:func:`robustbench_cnn.measures.artifact.measure_artifact`: clean accuracy, macro F1, size,
batch-1 latency and, per ``--eps``, the direct Square Attack); those rows are the bundle's
``host/results.csv``, and the clean predictions and accuracy are what the device must reproduce.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from robustbench_cnn.cli.bundle import check_out, seal
from robustbench_cnn.contract.results import Row, frame, write_csv
from robustbench_cnn.edge.bundle_format import EVAL_DATA, file_stem
from robustbench_cnn.engine.runner import new_run_id
from robustbench_cnn.errors import InputError
from robustbench_cnn.measures.artifact import DeployedArtifact, measure_artifact

log = logging.getLogger(__name__)
HOST_RESULTS = "host/results.csv"


def read_eval_set(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as float32 ``(N, C, H, W)`` in [0, 1] and ``y`` int64 from an ``.npz`` of uint8 ``x``
    ``(N, H, W, C)`` and integer ``y``; one line naming the file and the fix for anything else."""
    fix = "give an .npz with x uint8 (N, H, W, C) and integer y (N,), e.g. np.savez(path, x=x, y=y)"
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files or "y" not in data.files:
                raise InputError(f"{path}: --data has arrays {sorted(data.files)[:8]}, not x and y; {fix}")
            x, y = data["x"], data["y"]
    except (OSError, ValueError, EOFError) as exc:  # object arrays: "Object arrays cannot be loaded ..."
        raise InputError(f"{path}: --data is not a plain .npz ({str(exc).splitlines()[0][:100]}); {fix}") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise InputError(f"{path}: x is {x.dtype} {tuple(x.shape)}, not uint8 (N, H, W, C) with 1 or 3 channels; {fix}")
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
        raise InputError(f"{path}: y is {y.dtype} {tuple(y.shape)}, not integer labels ({len(x)},); {fix}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) / 255, y.astype(np.int64)


def build_artifact_bundle(
    artifact: Path,
    data: Path,
    out: Path,
    input_range: str = "0..1",
    eps: tuple[float, ...] = (),
    queries: int = 100,
    accuracy_tol: float = 0.01,
    agreement: float = 0.99,
    force: bool = False,
) -> Path:
    """Write the bundle of one ``.tflite`` ``artifact`` on the eval set ``data`` to ``out``."""
    check_out(out, force)
    x, y = read_eval_set(data)
    model = DeployedArtifact(artifact, input_range)
    if tuple(x.shape[1:]) != tuple(model.image_shape):
        raise InputError(f"{artifact}: takes {tuple(model.image_shape)} images (C, H, W); {data} holds "
                         f"{tuple(x.shape[1:])}; give the eval set the artifact was built for")  # fmt: skip
    name, precision = artifact.stem, "int8" if model.quantized else "fp32"
    compression, layout = ("int8" if model.quantized else "none"), ("NHWC" if model.nhwc else "NCHW")
    row = partial(Row, run_id=new_run_id(), suite="artifact", dataset=data.stem, model=name, arch="artifact",
                  compression=compression, format="tflite", runtime=model.runtime)  # fmt: skip
    pred = model.predict(x).argmax(1)
    rows = measure_artifact(model, x, y, row, eps=eps, queries=queries, num_classes=int(y.max()) + 1, pred=pred)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        stage = Path(tmp) / "bundle"
        for folder in ("models", "data", "host"):
            (stage / folder).mkdir(parents=True)
        rel, pred_rel = f"models/{file_stem(name)}.{precision}.tflite", f"data/pred-{file_stem(name)}.{precision}.npz"
        shutil.copyfile(artifact, stage / rel)
        np.savez_compressed(stage / EVAL_DATA, x=x, y=y)
        np.savez_compressed(stage / pred_rel, clean=pred.astype(np.int64))
        write_csv(frame(rows), stage / HOST_RESULTS)
        entry = {"model": name, "arch": "artifact", "defense": "none", "compression": compression,
                 "precision": precision, "file": rel,
                 "predictions": pred_rel, "adversarial": None, "attacks": {}, "parity": "unrecorded",
                 "expected": {"clean_acc": float((pred == y).mean()), "robust_acc": {}},
                 "input": {"layout": layout, "range": input_range}}  # fmt: skip
        source = {"suite": "artifact", "run_id": "none", "dataset": data.stem, "images": len(y), "seed": 0,
                  "environment": {}}  # fmt: skip
        tolerances = {"accuracy": accuracy_tol, "agreement": agreement, "adversarial_agreement": agreement}
        seal(stage, out, {"source": source, "tolerances": tolerances, "models": [entry], "left_out": []})
    log.info("bundle of %s (%s, %s input, %s) on %d images -> %s", name, precision, layout, input_range, len(y), out)
    return out
