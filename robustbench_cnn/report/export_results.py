"""``export-results``: a run's manifest and rows as one JSON document, or logged to MLflow.

JSON: ``{"format": "robustbench-cnn-results", "format_version": 1, "manifest": {...}, "rows": [...]}``,
one object per results row with the schema's columns, numbers as JSON numbers and empty cells as
``null``. MLflow (an optional dependency, not installed by the project): one MLflow run per
robustbench run in a local file store (``RUN_DIR/mlruns`` by default), with the run's settings as
params, every row as a metric and the run's files as artefacts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from robustbench_cnn.contract.manifest import RunManifest, read_run_manifest, write_json
from robustbench_cnn.contract.results import read_csv
from robustbench_cnn.errors import InputError
from robustbench_cnn.report.leaderboard import variant_label

FORMAT = "robustbench-cnn-results"
FORMAT_VERSION = 1
ARTEFACTS = ("results.csv", "manifest.json", "summary.md", "report.md", "report.html", "run.log")


def load(run_dir: Path) -> tuple[pd.DataFrame, RunManifest]:
    """A run directory's table and manifest, or one line naming what is wrong."""
    csv, manifest = run_dir / "results.csv", run_dir / "manifest.json"
    for path in (csv, manifest):
        if not path.is_file():
            raise InputError(f"{run_dir}: not a run directory (no {path.name}); pass results/<suite>/<run_id>")
    try:
        table = read_csv(csv)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{csv}: malformed results table ({str(exc).splitlines()[0]})") from None
    return table, read_run_manifest(manifest)


def to_document(table: pd.DataFrame, manifest: Mapping[str, Any]) -> dict[str, Any]:
    table = table.astype({c: "Int64" for c in ("n", "batch_size") if c in table.columns})  # counts as integers
    rows = json.loads(table.to_json(orient="records", double_precision=15))  # NaN/NA -> null
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "manifest": manifest, "rows": rows}


def export_json(run_dir: Path, out: Path | None = None) -> Path:
    """Write the JSON document (default ``RUN_DIR/results.json``); returns its path."""
    table, manifest = load(run_dir)
    path = out or run_dir / "results.json"
    write_json(to_document(table, manifest), path)
    return path


def metric_key(r: pd.Series) -> str:
    """An MLflow metric name for a row: ``variant/metric[/attack-norm@eps][/bs N]`` in MLflow's alphabet."""
    parts = [variant_label(r), str(r["metric"])]
    if pd.notna(r.get("attack")) or pd.notna(r.get("eps")):
        attack = "-".join(str(r[c]) for c in ("attack", "norm") if pd.notna(r.get(c)))
        parts.append(f"{attack}@{r['eps']:g}" if pd.notna(r.get("eps")) else attack)
    if pd.notna(r.get("batch_size")):
        parts.append(f"bs{int(r['batch_size'])}")
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", "/".join(parts))


def params(manifest: Mapping[str, Any]) -> dict[str, str]:
    env = manifest.get("environment", {})
    out = {k: str(manifest.get(k)) for k in ("run_id", "suite", "seed", "device", "status", "suite_sha256")}
    out |= {"cpu": str(env.get("cpu")), "gpu": str(env.get("gpu")), "git_sha": str(env.get("git", {}).get("sha"))}
    out |= {f"pkg_{k}": str(v) for k, v in env.get("packages", {}).items()}
    return out


def export_mlflow(run_dir: Path, out: Path | None = None) -> str:
    """Log the run to a local MLflow store (default ``RUN_DIR/mlruns``); returns the MLflow run id."""
    try:
        import mlflow
    except ImportError:
        raise InputError("export-results --format mlflow needs mlflow: pip install mlflow") from None
    table, manifest = load(run_dir)
    store = (out or run_dir / "mlruns").resolve()
    mlflow.set_tracking_uri(store.as_uri())
    mlflow.set_experiment(str(manifest.get("suite", "robustbench-cnn")))
    metrics = {metric_key(r): float(r["value"]) for _, r in table.iterrows()}
    with mlflow.start_run(run_name=str(manifest.get("run_id"))) as run:
        mlflow.log_params(params(manifest))
        mlflow.log_metrics(metrics)
        for name in ARTEFACTS:
            if (run_dir / name).is_file():
                mlflow.log_artifact(str(run_dir / name))
        for png in sorted(run_dir.glob("*.png")):
            mlflow.log_artifact(str(png), artifact_path="plots")
        return str(run.info.run_id)
