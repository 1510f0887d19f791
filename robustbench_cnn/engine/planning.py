"""``robustbench-cnn plan SUITE`` (and ``run --dry-run``): what a run would do, without doing it.

For each model: where its weights come from (a checkpoint, a cache hit, or training), with the
cache key computed exactly as the runner computes it (:func:`model_identity`); its cells
(:func:`robustbench_cnn.engine.plan.plan`); and a work estimate in image-passes (one forward and
backward pass of one image): training epochs times the defense's attack steps, attack steps times
restarts, the sanity checks' attacks, and certification noise samples. Nothing is trained, written
or cached; the dataset is loaded (to fingerprint it for the cache keys) when it is available.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustbench_cnn.config.load import LoadedSuite
from robustbench_cnn.config.spec import ModelSpec, SuiteSpec
from robustbench_cnn.data import load_dataset
from robustbench_cnn.engine.devices import resolve_for_device
from robustbench_cnn.engine.kinds import measures
from robustbench_cnn.engine.plan import plan as cell_plan
from robustbench_cnn.errors import RobustBenchError
from robustbench_cnn.train.cache import META, WEIGHTS, ModelCache, cache_key, code_fingerprint
from robustbench_cnn.train.pinned import training_mode


def plan_device(requested: str) -> str:
    """The device type a run of the suite would train on (``auto``: CUDA where available)."""
    import torch

    cuda = requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available())
    return "cuda" if cuda else "cpu"


DEFAULT_MAX_WORK = 10**10  # image-passes; the smoke suite is ~1e6


def model_identity(
    spec: ModelSpec,
    seed: int,
    data_fingerprint: str,
    num_classes: int,
    upstream_keys: list[str],
    code: str = "",
    training: str = "native",
) -> dict[str, Any]:
    """What a trained model's cache key hashes (``train.cache.cache_key``); the runner's
    ``_prepare_model`` must hash the same dict, or plans would report the wrong cache state.
    ``training``: how the weights were computed (``train.pinned.training_mode``), which changes them."""
    identity: dict[str, Any] = {
        "training": training,
        "arch": spec.arch,
        "params": spec.params,
        "train": spec.train.model_dump(),
        "defense": spec.defense.model_dump() if spec.defense is not None else None,
        "seed": seed,
        "data": data_fingerprint,
        "num_classes": num_classes,
        "code": code,  # the factory's (and plugins') source: editing it retrains
    }
    if spec.preprocess not in (None, "dataset"):  # a declared input contract is part of the trained model
        identity["preprocess"] = spec.preprocess.model_dump()  # type: ignore[union-attr]
    if spec.compress is not None:  # derived models change when what they derive from changes
        identity["compress"] = spec.compress.model_dump()
        identity["upstream"] = upstream_keys
    return identity


@dataclass(frozen=True)
class ModelPlan:
    name: str
    source: str  # checkpoint | cache hit | train | unknown
    where: str  # the checkpoint or cache entry path, or why the cache state is unknown
    key: str
    cells: tuple[str, ...]
    work: dict[str, int]  # image-passes: train, attacks, checks, certify


@dataclass(frozen=True)
class SuitePlan:
    suite: str
    path: Path
    dataset: str
    n_train: int | None
    n_eval: int | None
    seed: int
    models: tuple[ModelPlan, ...]
    note: str = ""  # why the data could not be loaded (cache state and data-sized work unknown)

    @property
    def total_work(self) -> int:
        return sum(sum(m.work.values()) for m in self.models)


def estimate(suite: SuiteSpec, m: ModelSpec, n_train: int, n_eval: int) -> dict[str, int]:
    """Image-passes of one model (an upper bound where attacks stop early)."""
    d, c = m.defense, m.compress
    inner = getattr(d, "steps", 1 if hasattr(d, "eps") else 0) if d is not None else 0
    if c is not None and getattr(c, "adversarial", False):
        inner += getattr(c, "steps", 0)
    work = {"train": 0 if m.checkpoint is not None else n_train * m.train.epochs * (1 + inner + (c is not None)),
            "attacks": 0, "checks": 0, "certify": 0}  # fmt: skip
    for measure in measures():  # each measure's own estimate (attacks, checks, certify, ...)
        for stage, passes in (measure.estimate(suite, m, n_eval) if measure.estimate else {}).items():
            work[stage] = work.get(stage, 0) + passes
    return work


def make_plan(loaded: LoadedSuite, cache_dir: Path, seed: int | None = None, data_dir: Path | None = None) -> SuitePlan:
    """The plan of ``loaded`` against the model cache in ``cache_dir``; reads, never writes."""
    import torch

    spec = loaded.spec
    seed = spec.seed if seed is None else seed
    n_train: int | None
    n_eval: int | None
    try:
        offline = spec.dataset.model_copy(update={"download": False})  # a plan downloads nothing
        data = load_dataset(offline, data_dir or loaded.resolve(spec.dataset.data_dir))
        n_train, n_eval, why = len(data.y_train), len(data.y_eval), ""
    except RobustBenchError as exc:  # e.g. CIFAR-10 not downloaded yet: sizes from the suite, keys unknown
        data, n_train, n_eval, why = None, spec.dataset.train_size, spec.dataset.eval_size, str(exc)
    cache = ModelCache(cache_dir)
    keys: dict[str, str] = {}
    labels_spec = resolve_for_device(spec, torch.device("cpu"), n_eval or 1)  # cell labels: the same on any device
    models = []
    for i, m in enumerate(spec.models):
        if m.checkpoint is not None:
            path = loaded.checkpoint(i)
            keys[m.name] = hashlib.sha256(path.read_bytes()).hexdigest()[:20]  # type: ignore[union-attr]
            source, where = ("zoo" if m.zoo else "checkpoint"), str(path)
        elif data is None or any(u not in keys for u in (m.compress.upstream if m.compress else ())):
            source, where = "unknown", "(data not loaded)" if why else "(an upstream model's key is unknown)"
        else:
            upstream = [keys[u] for u in m.compress.upstream] if m.compress else []
            code = code_fingerprint(m.arch, loaded.spec.plugins, loaded.base_dir)
            mode = training_mode(spec.performance.reproducible_training, plan_device(spec.device))
            keys[m.name] = cache_key(model_identity(m, seed, data.fingerprint, data.num_classes, upstream, code, mode))
            entry = cache.entry(m.arch, keys[m.name])
            hit = (entry / META).is_file() and (entry / WEIGHTS).is_file()
            source, where = ("cache hit" if hit else "train"), str(entry)
        cells = tuple(c.label for c in cell_plan(labels_spec, m))
        models.append(ModelPlan(m.name, source, where, keys.get(m.name, ""), cells,
                                estimate(spec, m, n_train or 0, n_eval or 0)))  # fmt: skip
    return SuitePlan(spec.name, loaded.path, spec.dataset.name, n_train, n_eval, seed, tuple(models), why)


def render(p: SuitePlan, max_work: int = DEFAULT_MAX_WORK) -> str:
    """The plan as text: models, cells, work; a WARNING line when the work exceeds ``max_work``."""
    sizes = f"{p.n_train} train / {p.n_eval} eval images" if p.n_train and p.n_eval else "sizes unknown"
    lines = [f"suite '{p.suite}' ({p.path}): dataset {p.dataset}, {sizes}, seed {p.seed}", f"models ({len(p.models)}):"]
    width = max(len(m.name) for m in p.models)
    lines += [f"  {m.name:<{width}}  {m.source:<10} {m.where}" for m in p.models]
    lines.append("cells:")
    for m in p.models:
        kinds = Counter(label.split("(")[0] for label in m.cells)
        counts = ", ".join(k if n == 1 else f"{k} x{n}" for k, n in kinds.items())
        lines.append(f"  {m.name:<{width}}  {len(m.cells)} ({counts})")
    attacks = dict.fromkeys(label for m in p.models for label in m.cells if label.startswith("attack("))
    lines.append(f"attack cells: {', '.join(a.removeprefix('attack(').removesuffix(')') for a in attacks) or 'none'}")
    stages = dict.fromkeys(k for m in p.models for k in m.work)  # train, attacks, checks, certify, then plugins'
    parts = {k: sum(m.work.get(k, 0) for m in p.models) for k in stages}
    lines.append(
        "work (image-passes, approx.): " + ", ".join(f"{k} {v:.3g}" for k, v in parts.items())
        + f"; total {p.total_work:.3g} (limit {max_work:.3g}, --max-work)"
    )  # fmt: skip
    if p.note:
        lines.append(f"note: data not loaded ({p.note}); cache state and data-sized work are unknown or partial")
    if p.total_work > max_work:
        lines.append(f"WARNING: {p.total_work:.3g} image-passes exceeds --max-work {max_work:.3g}; `run` refuses it")
    lines.append("plan only: nothing was trained, cached or written")
    return "\n".join(lines) + "\n"
