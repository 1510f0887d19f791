"""Typed, frozen specs for a suite file. Every field has a default except what names the work.

A suite file is TOML::

    name = "smoke"
    seed = 0
    [dataset]
    name = "digits"
    [[models]]
    name = "cnn"
    arch = "simple_cnn"
    [[evaluations]]
    attack = "pgd"
    eps = ["1/255", 0.05]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from robustbench_cnn.config.paths import name_key
from robustbench_cnn.config.problems import nested, problems, toml_type
from robustbench_cnn.config.spec_measure import (  # noqa: F401  (re-exported: the suite's spec in one place)
    CertifySpec,
    ChecksSpec,
    EnsembleSpec,
    EvalSpec,
    ExportSpec,
    LatencySpec,
    PerformanceSpec,
    ThreatModelSpec,
)
from robustbench_cnn.config.spec_types import (  # noqa: F401  (Number: re-exported for defenses and compressors)
    MAX_BATCH,
    MAX_IMAGES,
    MAX_ITEMS,
    MAX_MODELS,
    MAX_SEED,
    ArchName,
    DatasetName,
    Name,
    Number,
    PathText,
)
from robustbench_cnn.config.spec_types import (
    SpecBase as _Spec,
)
from robustbench_cnn.errors import RobustBenchError, shown
from robustbench_cnn.registry import hook, registry
from robustbench_cnn.zoo import Preprocess


class DatasetSpec(_Spec):
    """Which data, where it lives, and how much of it to use."""

    name: DatasetName = "digits"
    data_dir: PathText | None = Field(None, description="relative paths resolve against the suite file's folder")
    path: PathText | None = Field(None, description="name = 'npz': the .npz file (x uint8 (N, H, W, C), y), "
                                  "relative to data_dir or the suite's folder")  # fmt: skip
    num_classes: int | None = Field(None, ge=2, le=100_000, description="name = 'npz': default max(y) + 1")
    download: bool = Field(False, description="fetch the official archives if missing (needs the internet)")
    image_size: int | None = Field(None, ge=4, le=512, description="resize images to this square size")
    train_size: int | None = Field(None, ge=1, le=MAX_IMAGES, description="seeded subset of the training split")
    eval_size: int | None = Field(None, ge=1, le=MAX_IMAGES, description="seeded subset of the evaluation split")
    split_seed: int = Field(0, ge=0, le=MAX_SEED)


class TrainSpec(_Spec):
    """A standard supervised recipe (SGD+Nesterov or AdamW; one-cycle, cosine or constant LR)."""

    epochs: int = Field(30, ge=0, le=10_000)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0, le=10, description="at most 10: refused up front, not diverging mid-run")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: Literal["none", "shift", "shift_flip"] = Field("shift", description="random shifts (pad 2 + crop); flips")


class DefenseSpec(_Spec):
    """Base of every defense's hyper-parameters; ``name`` selects the registered defense."""

    name: str


class CompressSpec(_Spec):
    """Base of every compression step's parameters; ``name`` selects the registered compressor."""

    name: str
    accepts_defense: ClassVar[bool] = True  # False: the step is the training itself (no [models.defense])

    @property
    def upstream(self) -> tuple[str, ...]:
        """Names of the suite's models this step starts from or learns from (earlier in the file)."""
        return ()

    @property
    def label(self) -> str:
        return self.name


def _plugin_spec(kind: str, registry_name: str, example: str) -> Callable[[Any], Any]:
    """A before-validator turning a ``{ name = ..., ... }`` table into the spec class its name registers."""

    def validate(value: Any) -> Any:
        if value is None or isinstance(value, _Spec):
            return value
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError(f"a {kind} is a table with a 'name' key, e.g. {example}")
        if not isinstance(value["name"], str):
            raise ValueError(f"a {kind}'s 'name' is a string, e.g. {example}")
        from pydantic import ValidationError

        spec_cls = registry(registry_name).get(value["name"]).spec
        try:
            return spec_cls.model_validate(value)
        except ValidationError as exc:
            problems(nested(value["name"], exc.errors(), spec_cls))
            raise  # unreachable: a ValidationError has errors

    return validate


_defense = _plugin_spec("defense", "defenses", '{ name = "pgd_at", eps = 0.1 }')
_compress = _plugin_spec("compression", "compressors", '{ name = "prune", ratio = 0.5 }')


def _preprocess(value: Any) -> Any:
    """``"none"`` (raw [0, 1] pixels) is ``Preprocess()``; ``"dataset"`` stays; a table is validated."""
    if value == "none":
        return Preprocess()
    if isinstance(value, str) and value != "dataset":
        raise ValueError(f"{shown(value, 40)}: preprocess is 'none', 'dataset' or a table "
                         "{ mean = [...], std = [...], input_range = '0..1' | '0..255' }")  # fmt: skip
    return value


PreprocessField = Annotated[Literal["dataset"] | Preprocess | None, BeforeValidator(_preprocess)]


def _param_values(params: dict[str, Any]) -> dict[str, Any]:
    """Architecture parameters are TOML scalars: booleans, integers, finite floats, short strings."""
    found = []
    for key, value in params.items():
        if not isinstance(value, bool | int | float | str) or (isinstance(value, str) and len(value) > 4096):
            found.append((key, f"a parameter is a number, a boolean or a short string; got {toml_type(value)}"))
        elif isinstance(value, float) and not math.isfinite(value):
            found.append((key, f"{value} is not a finite number"))
    problems(found)
    return params


class ModelSpec(_Spec):
    """One model: an architecture, its parameters, a defense, and either a recipe or a checkpoint."""

    name: Name
    arch: ArchName
    params: Annotated[dict[str, Any], AfterValidator(_param_values)] = Field(default_factory=dict, max_length=MAX_ITEMS)
    train: TrainSpec = TrainSpec()
    defense: Annotated[DefenseSpec | None, BeforeValidator(_defense)] = None
    compress: Annotated[CompressSpec | None, BeforeValidator(_compress)] = Field(
        None, description="derive this model from others: pruning a trained model, or distilling a teacher"
    )
    checkpoint: PathText | None = Field(None, description="a .safetensors or torch.save state dict to load, not train")
    checkpoint_format: Literal["auto", "wrapped", "net"] = Field(
        "auto", description="net: a bare network's state dict (needs preprocess); wrapped: the whole model"
    )
    preprocess: PreprocessField = Field(
        None, description="what the network expects in front of its first layer: 'none' (raw [0, 1]), 'dataset' "
        "(the training images' mean/std: the default for models the suite trains) or { mean, std, input_range }",
    )  # fmt: skip

    @property
    def defense_name(self) -> str:
        return self.defense.name if self.defense is not None else "none"

    @property
    def compression(self) -> str:
        """The ``compression`` column: e.g. ``prune(magnitude,0.5)`` or ``distill(resnet20)``; ``none``."""
        return self.compress.label if self.compress is not None else "none"  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _params_fit_arch(self) -> ModelSpec:
        found = []
        try:
            hook("check_model_params")(self.arch, self.params)
        except (RobustBenchError, ValueError, TypeError) as exc:  # the models code's own one-line message
            message = str(exc)  # names the parameter itself ("params.width = 1.5: ...") or not
            found.append(("" if message.startswith("params") else "params", message))
        if self.compress is not None and self.defense is not None and not self.compress.accepts_defense:
            found.append(("", f"compress '{self.compress.name}' trains the model itself; remove its defense table"))
        if self.checkpoint_format == "net" and self.checkpoint is not None and self.preprocess is None:
            found.append(("preprocess", NEEDS_PREPROCESS))
        found += self._zoo_problems()
        problems(found)
        return self

    def _zoo_problems(self) -> list[tuple[str, str]]:
        from robustbench_cnn.zoo import ZOO

        name = self.zoo
        if name is None:
            return []
        e = ZOO.get(name)
        if e is None:
            from robustbench_cnn.errors import did_you_mean

            return [("checkpoint", f"unknown zoo model {shown(name, 80)}{did_you_mean(name, ZOO)}")]
        if e.kind != "torch":
            return [("checkpoint", f"zoo model '{name}' is an edge build ({e.file}), not torch weights; measure it "
                     "with `robustbench-cnn zoo measure`")]  # fmt: skip
        if self.arch != e.arch or dict(self.params) != dict(e.params):
            return [("arch", f"zoo model '{name}' is arch '{e.arch}' with params {dict(e.params)}; remove arch and "
                     "params (the zoo entry sets them)")]  # fmt: skip
        if self.defense is not None or self.compress is not None:
            return [("checkpoint", f"zoo model '{name}' is loaded, not trained; remove its defense/compress table")]
        return []

    @property
    def zoo(self) -> str | None:
        """The zoo entry this model loads (``checkpoint = "zoo:NAME"``), else None."""
        from robustbench_cnn.zoo import PREFIX, is_zoo

        return self.checkpoint.removeprefix(PREFIX) if is_zoo(self.checkpoint) else None  # type: ignore[union-attr]


NEEDS_PREPROCESS = ("a bare network's checkpoint does not say what input it expects; set preprocess = 'none' "
                    "(raw [0, 1] pixels), 'dataset' (the dataset's mean/std) or "
                    "{ mean = [...], std = [...] }")  # fmt: skip


def _zoo_entry(m: ModelSpec) -> Any:
    from robustbench_cnn.zoo import ZOO

    return ZOO.get(m.zoo) if m.zoo is not None else None


def _from_zoo(m: Any) -> Any:
    """A model with ``checkpoint = "zoo:NAME"`` takes the entry's arch, params and preprocessing (a bare
    network's state dict) unless it sets them; an unknown name is reported by the model's own check."""
    from robustbench_cnn.zoo import PREFIX, ZOO, is_zoo

    if not isinstance(m, dict) or not isinstance(m.get("checkpoint"), str) or not is_zoo(m["checkpoint"]):
        return m
    e = ZOO.get(m["checkpoint"].removeprefix(PREFIX))
    if e is None or e.kind != "torch":
        return {"arch": "simple_cnn", **m}  # the checkpoint check names the problem
    return {"arch": e.arch, "params": dict(e.params), "preprocess": e.preprocess, "checkpoint_format": "net", **m}


class SuiteSpec(_Spec):
    """The whole suite: data, models, evaluations, and how to run them."""

    name: Name
    plugins: tuple[str, ...] = Field((), description="modules imported (from the suite's folder) before validation")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$", description="auto | cpu | cuda | cuda:N")
    eval_batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    dataset: DatasetSpec = DatasetSpec()
    models: tuple[ModelSpec, ...] = Field(min_length=1, max_length=MAX_MODELS)
    evaluations: tuple[EvalSpec, ...] = Field((), max_length=MAX_ITEMS)
    latency: LatencySpec = LatencySpec()
    certify: CertifySpec = CertifySpec()
    checks: ChecksSpec = ChecksSpec()
    ensemble: EnsembleSpec = EnsembleSpec()
    exports: tuple[ExportSpec, ...] = Field((), max_length=MAX_ITEMS)
    performance: PerformanceSpec = PerformanceSpec()
    threat_models: tuple[ThreatModelSpec, ...] = Field(
        (), max_length=8, description="the headline budget(s), one leaderboard each; default: the eps the "
        "suite's adversarial training used, else the middle evaluated Linf eps (see headline())",
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _derive_models(cls, data: Any) -> Any:
        """A model with ``compress.source`` inherits the source's ``arch`` and ``params``, and
        ``compress.ratio = [a, b]`` expands into one model per ratio, named ``<name>-r<ratio>``."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            return data
        data = {**data, "models": [_from_zoo(m) for m in data["models"]]}
        by_name = {m["name"]: m for m in data["models"] if isinstance(m, dict) and isinstance(m.get("name"), str)}
        models: list[Any] = []
        for m in data["models"]:
            c = m.get("compress") if isinstance(m, dict) else None
            if not isinstance(c, dict):
                models.append(m)
                continue
            source = by_name.get(c["source"]) if isinstance(c.get("source"), str) else None
            if source is not None:
                m = {"arch": source.get("arch"), "params": source.get("params", {}), **m}
            ratios = c.get("ratio")
            if isinstance(ratios, list) and len(ratios) <= MAX_ITEMS:
                models += [{**m, "name": f"{m.get('name')}-r{r}", "compress": {**c, "ratio": r}} for r in ratios]
            else:  # a too-long list stays a list: "ratio: Input should be a valid number"
                models.append(m)
        return {**data, "models": models}

    @model_validator(mode="after")
    def _unique_model_names(self) -> SuiteSpec:
        """Names unique even where tables and file systems merge them (see :func:`name_key`); every
        reference to a model names one defined earlier."""
        seen: dict[str, str] = {}  # name_key -> name
        found: list[tuple[str, str]] = []
        for i, m in enumerate(self.models):
            twin = seen.get(name_key(m.name))
            if twin == m.name:
                found.append((f"models[{i}].name", f"model name '{m.name}' is used twice; names must be unique"))
            elif twin is not None:
                found.append((f"models[{i}].name", f"model names '{twin}' and '{m.name}' differ only in case or "
                              "'-'/'_'/'.', which results tables and file systems merge; rename one"))  # fmt: skip
            for up in m.compress.upstream if m.compress is not None else ():
                if up not in seen.values():
                    found.append((f"models[{i}].compress", f"model '{m.name}': {shown(up, 80)} must be a model "
                                  "defined earlier in the file"))  # fmt: skip
            seen.setdefault(name_key(m.name), m.name)
        names = set(seen.values())
        for i, m in enumerate(self.models):
            e = _zoo_entry(m)
            if e is not None and self.dataset.name not in (e.dataset, "npz"):
                found.append((f"models[{i}].checkpoint", f"zoo model '{e.name}' was published on {e.dataset}, "
                              f"not {self.dataset.name}; set dataset.name = '{e.dataset}'"))  # fmt: skip
        if self.checks.surrogate is not None and self.checks.surrogate not in names:
            found.append(("checks.surrogate", f"no model named {shown(self.checks.surrogate, 80)}"))
        listed = [(f"exports[{i}]", ex.models) for i, ex in enumerate(self.exports)]
        listed += [(f"evaluations[{i}]", ev.models) for i, ev in enumerate(self.evaluations)]
        for where, models in listed:
            found += [(f"{where}.models", f"no model named {shown(n, 80)}") for n in models or () if n not in names]
        problems(found)
        return self

    @model_validator(mode="after")
    def _unique_cells(self) -> SuiteSpec:
        """Each (attack, norm, eps) and each export (format, precision) of a model once: they name cells."""
        found: list[tuple[str, str]] = []
        budgets: dict[tuple[str, str, float, str], int] = {}
        names = [m.name for m in self.models]
        for i, ev in enumerate(self.evaluations):
            for j, eps in enumerate(ev.eps):
                firsts = {budgets.setdefault((ev.attack, ev.norm, float(eps), m), i) for m in names if ev.applies_to(m)}
                first = min(firsts, default=i)
                if first != i or list(ev.eps).index(eps) != j:
                    found.append((f"evaluations[{i}].eps[{j}]", f"{ev.attack} {ev.norm} eps {eps:g} is already "
                                  f"evaluated (evaluations[{first}]); list each budget once"))  # fmt: skip
        targets: dict[tuple[str, str, str], int] = {}
        for i, ex in enumerate(self.exports):
            for m in ex.models or [m.name for m in self.models]:
                first = targets.setdefault((m, ex.format, ex.precision), i)
                if first != i:
                    found.append((f"exports[{i}]", f"model '{m}' is already exported as {ex.format} {ex.precision} "
                                  f"(exports[{first}]); list each export once"))  # fmt: skip
        problems(found)
        return self

    @model_validator(mode="after")
    def _declared_budgets_are_evaluated(self) -> SuiteSpec:
        """A declared threat model is read from rows the evaluations write: its budget must be one."""
        budgets = self.budgets()
        found = [(f"threat_models[{i}]", f"{t.norm} eps {t.eps:g} is not evaluated; add it to an [[evaluations]] "
                  f"eps list or declare one of {', '.join(f'{n} {e:g}' for n, e in budgets) or 'none'}")
                 for i, t in enumerate(self.threat_models) if (t.norm, float(t.eps)) not in budgets]  # fmt: skip
        problems(found)
        return self

    def budgets(self) -> list[tuple[str, float]]:
        """Every evaluated (norm, eps > 0), in order of first appearance."""
        seen = {(ev.norm, float(e)): None for ev in self.evaluations for e in ev.eps if e > 0}
        return list(seen)

    def headline(self) -> list[tuple[str, float, str]]:
        """The headline threat models as ``(norm, eps, rule)``, ``rule`` saying what chose each: the
        suite's declaration; else the budget its adversarial training used (where evaluated); else the
        middle evaluated Linf eps (the middle of any norm's without Linf)."""
        if self.threat_models:
            return [(t.norm, float(t.eps), "declared in the suite") for t in self.threat_models]
        budgets = self.budgets()
        for m in self.models:
            eps, norm = getattr(m.defense, "eps", None), getattr(m.defense, "norm", "linf")
            if isinstance(eps, float) and (norm, eps) in budgets:
                return [(norm, eps, f"the eps {m.name}'s adversarial training used")]
        pool = [b for b in budgets if b[0] == "linf"] or budgets
        if not pool:
            return []
        ordered = sorted(pool, key=lambda b: b[1])
        norm, eps = ordered[(len(ordered) - 1) // 2]
        return [(norm, eps, f"the middle evaluated {norm} eps (none declared, no adversarial training)")]

    @property
    def check_eps(self) -> float:
        """The sanity checks' Linf budget: ``checks.eps``, else the first Linf headline, else the
        largest Linf eps evaluated."""
        linf = [e for ev in self.evaluations if ev.norm == "linf" for e in ev.eps if e > 0]
        head = [eps for norm, eps, _ in self.headline() if norm == "linf"]
        return self.checks.eps or (head[0] if head else max(linf) if linf else 8 / 255)
