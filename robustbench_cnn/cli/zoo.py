"""``robustbench-cnn zoo measure NAME``: measure a zoo entry that exists only as an edge build (a
deployed artifact) on its own runtime, and judge it against its published figure.

Writes ``OUT/zoo-<NAME>/<run_id>/``: ``results.csv`` (the results schema: format ``tflite``, runtime
the interpreter's package), ``manifest.json`` and ``summary.md`` with the reproduction table."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from robustbench_cnn.config.spec import DatasetSpec
from robustbench_cnn.contract.manifest import write_json
from robustbench_cnn.contract.results import Row, frame, write_csv
from robustbench_cnn.data import load_dataset
from robustbench_cnn.engine.runner import new_run_id
from robustbench_cnn.errors import InputError
from robustbench_cnn.measures.artifact import measure_artifact, open_artifact
from robustbench_cnn.report.reproduction import render_markdown, render_terminal, reproduction
from robustbench_cnn.zoo import entry, locate


@dataclass(frozen=True)
class MeasureOptions:
    name: str
    data_dir: Path | None
    zoo_dir: Path | None
    out: Path
    dataset: str = ""  # default: the entry's dataset
    data_path: str | None = None  # dataset 'npz': the file, relative to data_dir
    eval_size: int | None = None
    eps: tuple[float, ...] = (2 / 255, 8 / 255)
    queries: int = 100
    attack_size: int | None = 100
    seed: int = 0
    latency: bool = True


def measure(opts: MeasureOptions) -> tuple[Path, str]:
    """Measure the artifact; returns (run directory, summary text)."""
    import numpy as np

    e = entry(opts.name)
    if e.kind != "artifact":
        raise InputError(f"zoo model '{e.name}' has torch weights; measure it in a suite: checkpoint = 'zoo:{e.name}'")
    path = locate(e.name, opts.zoo_dir, "zoo measure")
    dataset = opts.dataset or e.dataset
    data = load_dataset(DatasetSpec(name=dataset, path=opts.data_path, eval_size=opts.eval_size,
                                    num_classes=10 if dataset == "npz" else None), opts.data_dir)  # fmt: skip
    artifact = open_artifact(path, e.preprocess.input_range)
    run_id = new_run_id()
    compression = "int8" if artifact.quantized else "none"
    row = partial(Row, run_id=run_id, suite=f"zoo-{e.name}", dataset=data.name, model=e.name, arch="artifact",
                  format=path.suffix.lstrip("."), runtime="tflite", compression=compression)  # fmt: skip
    x, y = data.x_eval.numpy(), data.y_eval.numpy().astype(np.int64)
    rows = measure_artifact(artifact, x, y, row, eps=opts.eps, queries=opts.queries, attack_size=opts.attack_size,
                            latency=(5, 20, 1.0) if opts.latency else None, seed=opts.seed,
                            num_classes=data.num_classes)  # fmt: skip
    df = frame(rows)
    run_dir = opts.out / f"zoo-{e.name}" / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    write_csv(df, run_dir / "results.csv")
    manifest = {"run_id": run_id, "suite": f"zoo-{e.name}", "interpreter": artifact.runtime,
                "models": {e.name: {"zoo": e.name, "source": "artifact", "weights": str(path), "sha256": e.sha256}},
                "dataset": {"name": data.name, "eval": len(y), "shape": list(data.x_eval.shape[1:])}}  # fmt: skip
    write_json(manifest, run_dir / "manifest.json")
    table = reproduction(df, manifest)
    shown = df[["model", "format", "compression", "metric", "attack", "eps", "value", "ci_low", "ci_high", "n",
                "batch_size"]]  # fmt: skip
    text = "\n".join([f"# zoo:{e.name} on {artifact.runtime} ({path.name})", "",
                      shown.astype(object).where(shown.notna(), None).to_markdown(index=False, floatfmt=".4g"),
                      *render_markdown(table)]) + "\n"  # fmt: skip
    (run_dir / "summary.md").write_text(text)
    return run_dir, "\n".join(render_terminal(table)) + "\n"
