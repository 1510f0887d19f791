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

import importlib
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _number(value: Any) -> Any:
    """Accept numbers and exact fractions written as strings ("8/255"); never ``eval``."""
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"'{value}' is not a number or a fraction like '8/255'") from None
    return value


Number = Annotated[float, BeforeValidator(_number)]


def _registered(module: str, registry: str) -> AfterValidator:
    """A name that must be registered in ``module.registry`` (imported on first use)."""

    def check(name: str) -> str:
        getattr(importlib.import_module(module), registry).get(name)
        return name

    return AfterValidator(check)


DatasetName = Annotated[str, _registered("robustbench_cnn.data", "DATASETS")]
ArchName = Annotated[str, _registered("robustbench_cnn.models", "MODELS")]
AttackName = Annotated[str, _registered("robustbench_cnn.attacks", "ATTACKS")]


class DatasetSpec(_Spec):
    """Which data, where it lives, and how much of it to use."""

    name: DatasetName = "digits"
    data_dir: str | None = Field(None, description="relative paths resolve against the suite file's folder")
    download: bool = Field(False, description="fetch the official archives if missing (needs the internet)")
    image_size: int | None = Field(None, ge=4, le=512, description="resize images to this square size")
    train_size: int | None = Field(None, ge=1, description="seeded subset of the training split")
    eval_size: int | None = Field(None, ge=1, description="seeded subset of the evaluation split")
    split_seed: int = 0


class TrainSpec(_Spec):
    """A standard supervised recipe (SGD+Nesterov or AdamW; one-cycle, cosine or constant LR)."""

    epochs: int = Field(30, ge=0)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
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


def _plugin_spec(kind: str, module: str, registry: str, example: str) -> Callable[[Any], Any]:
    """A before-validator turning a ``{ name = ..., ... }`` table into the spec class its name registers."""

    def validate(value: Any) -> Any:
        if value is None or isinstance(value, _Spec):
            return value
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError(f"a {kind} is a table with a 'name' key, e.g. {example}")
        from pydantic import ValidationError

        spec_cls = getattr(importlib.import_module(module), registry).get(value["name"]).spec
        try:
            return spec_cls.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            what = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"]).removeprefix("Value error, ")
            raise ValueError(f"{value['name']}.{where}: {what}") from None

    return validate


_defense = _plugin_spec("defense", "robustbench_cnn.defenses", "DEFENSES", '{ name = "pgd_at", eps = 0.1 }')
_compress = _plugin_spec("compression", "robustbench_cnn.compress", "COMPRESSORS", '{ name = "prune", ratio = 0.5 }')


class ModelSpec(_Spec):
    """One model: an architecture, its parameters, a defense, and either a recipe or a checkpoint."""

    name: str = Field(min_length=1)
    arch: ArchName
    params: dict[str, bool | int | float | str] = Field(default_factory=dict)
    train: TrainSpec = TrainSpec()
    defense: Annotated[DefenseSpec | None, BeforeValidator(_defense)] = None
    compress: Annotated[CompressSpec | None, BeforeValidator(_compress)] = Field(
        None, description="derive this model from others: pruning a trained model, or distilling a teacher"
    )
    checkpoint: str | None = Field(None, description="a .safetensors file to load instead of training")

    @property
    def defense_name(self) -> str:
        return self.defense.name if self.defense is not None else "none"

    @property
    def compression(self) -> str:
        """The ``compression`` column: e.g. ``prune(magnitude,0.5)`` or ``distill(resnet20)``; ``none``."""
        return self.compress.label if self.compress is not None else "none"  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _params_fit_arch(self) -> ModelSpec:
        from robustbench_cnn.models import check_params

        check_params(self.arch, self.params)
        if self.compress is not None and self.defense is not None and not self.compress.accepts_defense:
            raise ValueError(f"compress '{self.compress.name}' trains the model itself; remove its defense table")
        return self


class EvalSpec(_Spec):
    """One attack swept over a list of eps; threat model ``norm`` on [0, 1] images."""

    attack: AttackName
    norm: Literal["linf", "l2"] = "linf"
    eps: tuple[Number, ...] = Field(min_length=1)
    steps: int = Field(10, ge=1)
    step_size: Number | None = Field(None, gt=0, description="default 2.5 * eps / steps (Madry et al.)")
    restarts: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _eps_in_range(self) -> EvalSpec:
        from robustbench_cnn.attacks import ATTACKS

        norms = ATTACKS.get(self.attack).norms
        if self.norm not in norms:
            raise ValueError(f"attack '{self.attack}' supports norm {' or '.join(norms)}, not '{self.norm}'")
        for i, eps in enumerate(self.eps):
            if not math.isfinite(eps) or eps < 0:
                raise ValueError(f"eps[{i}] = {eps} must be a finite number >= 0")
            if self.norm == "linf" and eps > 1:
                raise ValueError(
                    f"eps[{i}] = {eps} is out of range for linf on [0, 1] images (0..1); did you mean '{eps:g}/255'?"
                )
        return self


class LatencySpec(_Spec):
    """Latency of the model's forward pass on the run's device (torch eager)."""

    enabled: bool = True
    batch_sizes: tuple[int, ...] = (1, 64)
    warmup: int = Field(5, ge=0)
    min_repeats: int = Field(20, ge=3)
    budget_s: float = Field(1.0, gt=0, description="time budget per batch size, after warm-up")


class CertifySpec(_Spec):
    """Randomized-smoothing certification (Cohen et al. 2019) of every model with a ``sigma`` defense."""

    n0: int = Field(100, ge=1, description="noise samples to select the top class")
    n: int = Field(1000, ge=1, description="noise samples to estimate its probability")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="failure probability of each certificate")
    radii: tuple[Number, ...] = Field((0.0, 0.25, 0.5, 0.75, 1.0), min_length=1)
    eval_size: int = Field(100, ge=1, description="first images of the eval split to certify")
    batch_size: int = Field(
        1024, ge=1, description="noisy copies per forward pass (a multiple of 16 draws the same noise as any other)"
    )
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="runs the noisy batches; auto: onnxruntime on CPU (same counts, ~2x faster), torch on GPU"
    )


class ChecksSpec(_Spec):
    """Gradient-masking sanity checks (Carlini et al. 2019), run on every model."""

    enabled: bool = True
    eps: Number | None = Field(None, gt=0, le=1, description="Linf budget; default: largest linf eps evaluated")
    steps: int = Field(10, ge=1)
    more_steps_factor: int = Field(5, ge=2, description="the more_steps check runs factor x steps ...")
    more_restarts: int = Field(3, ge=1, description="... with this many restarts")
    large_eps: Number = Field(0.5, gt=0, le=1)
    large_eps_max_acc: float = Field(0.05, ge=0, le=1)
    tolerance: float = Field(0.05, ge=0, le=1)
    eval_size: int = Field(200, ge=1)
    surrogate: str | None = Field(None, description="model name for the transfer check; default: first undefended")
    every_budget: bool = Field(True, description="more_steps for every iterative attack at every evaluated budget")
    eot_samples: int = Field(8, ge=1, description="a randomized model is attacked through its mean of this many passes")


class EnsembleSpec(_Spec):
    """The strong, named ensemble behind the headline worst case, run at every evaluated (norm, eps)."""

    enabled: bool = True
    members: tuple[Literal["apgd_ce", "apgd_dlr", "apgd_t", "cw_pgd"], ...] = Field(
        ("apgd_ce", "apgd_t", "cw_pgd"), min_length=1, description="run in order, each on the survivors"
    )
    steps: int = Field(50, ge=1)
    restarts: int = Field(2, ge=1)
    targets: int = Field(3, ge=1, description="apgd_t: the most likely wrong classes it targets")


class PerformanceSpec(_Spec):
    """How the hot paths run. Attacks only *craft* on the fast path; the model itself, in fp32,
    decides every robust-accuracy verdict (see ``robustbench_cnn.attacks.crafting``)."""

    threads: int | None = Field(None, ge=1, description="torch intra-op threads; default: torch's (all cores)")
    fold_batchnorm: bool = Field(True, description="attacks differentiate a verified BatchNorm-folded copy")
    attack_precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: attacks craft under autocast; clean_acc_bf16 and bf16_agreement rows report parity"
    )
    compile: bool = Field(False, description="torch.compile the module attacks differentiate (once per model)")

    def crafting_params(self) -> tuple[tuple[str, Any], ...]:
        """The non-default crafting settings, as cell parameters (default settings keep cell ids)."""
        default = PerformanceSpec()
        keys = ("fold_batchnorm", "attack_precision", "compile")
        return tuple((k, getattr(self, k)) for k in keys if getattr(self, k) != getattr(default, k))


class ExportSpec(_Spec):
    """Export models to a deployable format and measure them on its runtime, with parity checks.

    ``onnx`` runs on ONNX Runtime (dynamic batch); ``tflite`` on the LiteRT interpreter (batch 1).
    """

    format: Literal["onnx", "tflite"] = "onnx"
    precision: Literal["fp32", "int8"] = "fp32"
    models: tuple[str, ...] | None = Field(None, description="model names; default: every model")
    calibration_size: int = Field(256, ge=1, description="training images that calibrate int8")
    per_channel: bool = Field(
        False, description="int8 per-channel weight scales; default: yes for tflite, no for onnx (see README)"
    )
    opset: int = Field(18, ge=17, description="ONNX opset")

    @model_validator(mode="before")
    @classmethod
    def _per_channel_default(cls, data: Any) -> Any:
        """TFLite's int8 spec quantizes conv weights per channel (per-tensor: 8% top-1 agreement on the
        smoke MobileNetV2, whose depthwise filters differ in range); ONNX Runtime's per-tensor QDQ
        agreed better on simple_cnn (100% vs 92.8%)."""
        if isinstance(data, dict) and "per_channel" not in data:
            return {**data, "per_channel": data.get("format") == "tflite"}
        return data


class SuiteSpec(_Spec):
    """The whole suite: data, models, evaluations, and how to run them."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: int = Field(256, ge=1)
    dataset: DatasetSpec = DatasetSpec()
    models: tuple[ModelSpec, ...] = Field(min_length=1)
    evaluations: tuple[EvalSpec, ...] = ()
    latency: LatencySpec = LatencySpec()
    certify: CertifySpec = CertifySpec()
    checks: ChecksSpec = ChecksSpec()
    ensemble: EnsembleSpec = EnsembleSpec()
    exports: tuple[ExportSpec, ...] = ()
    performance: PerformanceSpec = PerformanceSpec()

    @model_validator(mode="before")
    @classmethod
    def _derive_models(cls, data: Any) -> Any:
        """A model with ``compress.source`` inherits the source's ``arch`` and ``params``, and
        ``compress.ratio = [a, b]`` expands into one model per ratio, named ``<name>-r<ratio>``."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            return data
        by_name = {m.get("name"): m for m in data["models"] if isinstance(m, dict)}
        models: list[Any] = []
        for m in data["models"]:
            c = m.get("compress") if isinstance(m, dict) else None
            if not isinstance(c, dict):
                models.append(m)
                continue
            source = by_name.get(c.get("source"))
            if source is not None:
                m = {"arch": source.get("arch"), "params": source.get("params", {}), **m}
            if isinstance(c.get("ratio"), list):
                models += [{**m, "name": f"{m.get('name')}-r{r}", "compress": {**c, "ratio": r}} for r in c["ratio"]]
            else:
                models.append(m)
        return {**data, "models": models}

    @model_validator(mode="after")
    def _unique_model_names(self) -> SuiteSpec:
        seen: set[str] = set()
        for m in self.models:
            if m.name in seen:
                raise ValueError(f"model name '{m.name}' is used twice; names must be unique")
            for up in m.compress.upstream if m.compress is not None else ():
                if up not in seen:
                    raise ValueError(f"model '{m.name}': '{up}' must be a model defined earlier in the file")
            seen.add(m.name)
        if self.checks.surrogate is not None and self.checks.surrogate not in seen:
            raise ValueError(f"checks.surrogate: no model named '{self.checks.surrogate}'")
        for i, ex in enumerate(self.exports):
            for name in ex.models or ():
                if name not in seen:
                    raise ValueError(f"exports[{i}].models: no model named '{name}'")
        return self

    @property
    def check_eps(self) -> float:
        linf = [e for ev in self.evaluations if ev.norm == "linf" for e in ev.eps if e > 0]
        return self.checks.eps or (max(linf) if linf else 8 / 255)
