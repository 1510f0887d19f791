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

from robustbench_cnn.errors import RobustBenchError, shown
from robustbench_cnn.suite.paths import check_name, check_path_text, name_key
from robustbench_cnn.suite.problems import nested, problems, toml_type

MAX_MODELS = 256
MAX_ITEMS = 64  # eps, radii, evaluations, exports, ratios, params, ...
MAX_SEED = 2**32 - 1  # numpy's seed range; torch's is wider
MAX_STEPS = 100_000
MAX_IMAGES = 10_000_000
MAX_BATCH = 65_536


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, str_max_length=4096)


def _number(value: Any) -> Any:
    """Accept numbers and exact fractions written as strings ("8/255"); never ``eval``."""
    if not isinstance(value, str):
        return value
    try:
        if len(value) > 64:
            raise ValueError
        fraction = Fraction(value.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{shown(value, 64)} is not a number or a fraction like '8/255'") from None
    try:
        return float(fraction)
    except OverflowError:
        raise ValueError(f"{shown(value, 64)} is too large to be a finite number; write a value like 0.5") from None


Number = Annotated[float, BeforeValidator(_number)]

Name = Annotated[str, AfterValidator(check_name)]
PathText = Annotated[str, AfterValidator(check_path_text)]


def _registered(module: str, registry: str) -> AfterValidator:
    """A name that must be registered in ``module.registry`` (imported on first use)."""

    def check(name: str) -> str:
        getattr(importlib.import_module(module), registry).get(name)
        return name

    return AfterValidator(check)


def _arch(name: str) -> str:
    """A registered name or a source form (``torchvision:NAME``, ``timm:NAME``, ``pkg.module:factory``)."""
    from robustbench_cnn.models.sources import resolve

    resolve(name)
    return name


DatasetName = Annotated[str, _registered("robustbench_cnn.data", "DATASETS")]
ArchName = Annotated[str, AfterValidator(_arch)]
AttackName = Annotated[str, _registered("robustbench_cnn.attacks", "ATTACKS")]


class DatasetSpec(_Spec):
    """Which data, where it lives, and how much of it to use."""

    name: DatasetName = "digits"
    data_dir: PathText | None = Field(None, description="relative paths resolve against the suite file's folder")
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


def _plugin_spec(kind: str, module: str, registry: str, example: str) -> Callable[[Any], Any]:
    """A before-validator turning a ``{ name = ..., ... }`` table into the spec class its name registers."""

    def validate(value: Any) -> Any:
        if value is None or isinstance(value, _Spec):
            return value
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError(f"a {kind} is a table with a 'name' key, e.g. {example}")
        if not isinstance(value["name"], str):
            raise ValueError(f"a {kind}'s 'name' is a string, e.g. {example}")
        from pydantic import ValidationError

        spec_cls = getattr(importlib.import_module(module), registry).get(value["name"]).spec
        try:
            return spec_cls.model_validate(value)
        except ValidationError as exc:
            problems(nested(value["name"], exc.errors(), spec_cls))
            raise  # unreachable: a ValidationError has errors

    return validate


_defense = _plugin_spec("defense", "robustbench_cnn.defenses", "DEFENSES", '{ name = "pgd_at", eps = 0.1 }')
_compress = _plugin_spec("compression", "robustbench_cnn.compress", "COMPRESSORS", '{ name = "prune", ratio = 0.5 }')


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
        "auto", description="net: a bare network's state dict (mean/std from the dataset); wrapped: the whole model"
    )

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

        found = []
        try:
            check_params(self.arch, self.params)
        except (RobustBenchError, ValueError, TypeError) as exc:  # the models code's own one-line message
            found.append(("params", str(exc)))
        if self.compress is not None and self.defense is not None and not self.compress.accepts_defense:
            found.append(("", f"compress '{self.compress.name}' trains the model itself; remove its defense table"))
        problems(found)
        return self


class EvalSpec(_Spec):
    """One attack swept over a list of eps; threat model ``norm`` on [0, 1] images."""

    attack: AttackName
    norm: Literal["linf", "l2"] = "linf"
    eps: tuple[Number, ...] = Field(min_length=1, max_length=MAX_ITEMS)
    steps: int = Field(10, ge=1, le=MAX_STEPS)
    step_size: Number | None = Field(None, gt=0, le=10, description="default 2.5 * eps / steps (Madry et al.)")
    restarts: int = Field(1, ge=1, le=100)

    @model_validator(mode="after")
    def _eps_in_range(self) -> EvalSpec:
        from robustbench_cnn.attacks import ATTACKS

        norms = ATTACKS.get(self.attack).norms
        found = []
        if self.norm not in norms:
            found.append(("norm", f"attack '{self.attack}' supports norm {' or '.join(norms)}, not '{self.norm}'"))
        for i, eps in enumerate(self.eps):
            if not math.isfinite(eps) or eps < 0:
                found.append(("", f"eps[{i}] = {eps} must be a finite number >= 0"))
            elif self.norm == "linf" and eps > 1:
                fix = f"did you mean '{eps:g}/255'?"
                found.append(("", f"eps[{i}] = {eps} is out of range for linf on [0, 1] images (0..1); {fix}"))
            elif eps > 1e4:
                found.append(("", f"eps[{i}] = {eps} is out of range for l2 (an image has at most ~1e3 norm)"))
        problems(found)
        return self


class LatencySpec(_Spec):
    """Latency of the model's forward pass on the run's device (torch eager)."""

    enabled: bool = True
    batch_sizes: tuple[Annotated[int, Field(ge=1, le=MAX_BATCH)], ...] = Field((1, 64), max_length=16)
    warmup: int = Field(5, ge=0, le=10_000)
    min_repeats: int = Field(20, ge=3, le=100_000)
    budget_s: float = Field(1.0, gt=0, le=3600, description="time budget per batch size, after warm-up")


class CertifySpec(_Spec):
    """Randomized-smoothing certification (Cohen et al. 2019) of every model with a ``sigma`` defense."""

    n0: int = Field(100, ge=1, le=10_000_000, description="noise samples to select the top class")
    n: int = Field(1000, ge=1, le=10_000_000, description="noise samples to estimate its probability")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="failure probability of each certificate")
    radii: tuple[Annotated[Number, Field(ge=0, le=1e4)], ...] = Field(
        (0.0, 0.25, 0.5, 0.75, 1.0), min_length=1, max_length=MAX_ITEMS
    )
    eval_size: int = Field(100, ge=1, le=MAX_IMAGES, description="first images of the eval split to certify")
    batch_size: int | None = Field(
        None, ge=1, le=MAX_BATCH, description="noisy copies per forward pass (a multiple of 16 draws the same noise "
        "as any other); default: 1024 on CPU, 16384 on CUDA",
    )  # fmt: skip
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="runs the noisy batches; auto: onnxruntime on CPU (same counts, ~2x faster), torch on GPU"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: the noisy batches run under autocast (torch runtime) once a probe image's class "
        "counts match fp32's within count_tolerance; else fp32 with a warning",
    )  # fmt: skip
    compile: bool = Field(False, description="torch.compile the torch sampler's classifier (checked like bf16)")
    count_tolerance: float = Field(0.01, ge=0, le=1, description="max |count difference| / n on the probe image")


class ChecksSpec(_Spec):
    """Gradient-masking sanity checks (Carlini et al. 2019), run on every model."""

    enabled: bool = True
    eps: Number | None = Field(None, gt=0, le=1, description="Linf budget; default: largest linf eps evaluated")
    steps: int = Field(10, ge=1, le=MAX_STEPS)
    more_steps_factor: int = Field(5, ge=2, le=100, description="the more_steps check runs factor x steps ...")
    more_restarts: int = Field(3, ge=1, le=100, description="... with this many restarts")
    large_eps: Number = Field(0.5, gt=0, le=1)
    large_eps_max_acc: float = Field(0.05, ge=0, le=1)
    tolerance: float = Field(0.05, ge=0, le=1)
    eval_size: int = Field(200, ge=1, le=MAX_IMAGES)
    surrogate: str | None = Field(None, description="model name for the transfer check; default: first undefended")
    min_clean_acc: float | None = Field(
        None, ge=0, le=1, description="a model below this clean (or training) accuracy is flagged undertrained "
        "(check_trained = 0); default: twice chance, 2 / classes",
    )  # fmt: skip


class PerformanceSpec(_Spec):
    """How the hot paths run. Attacks only *craft* on the fast path; the model itself, in fp32,
    decides every robust-accuracy verdict (see ``robustbench_cnn.attacks.crafting``)."""

    threads: int | None = Field(None, ge=1, le=4096, description="torch intra-op threads; default: torch's (all cores)")
    fold_batchnorm: bool = Field(True, description="attacks differentiate a verified BatchNorm-folded copy")
    attack_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 on a GPU with native bfloat16, else fp32; bf16: attacks craft under autocast, "
        "and clean_acc_bf16 / bf16_agreement rows report parity",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the module attacks differentiate (once per model); auto: on CUDA when a model's "
        "attack work reaches compile_min_work image-steps",
    )
    compile_min_work: float = Field(2e7, ge=0, description="image-steps per model from which compile = auto compiles")
    attack_batch_size: int | None = Field(
        None, ge=1, description="images per attack batch; default: eval_batch_size on CPU, on CUDA the largest power "
        "of two up to 4096 whose forward + input gradient fits in a quarter of the GPU's memory",
    )  # fmt: skip
    cudnn_benchmark: bool = Field(True, description="on CUDA, let cuDNN pick the fastest convolution algorithms")

    def crafting_params(self) -> tuple[tuple[str, Any], ...]:
        """The crafting settings that differ from the CPU baseline (BatchNorm fold, fp32, eager), as
        cell parameters: baseline settings keep cell ids. Call on a device-resolved spec."""
        baseline = {"fold_batchnorm": True, "attack_precision": "fp32", "compile": False}
        return tuple((k, getattr(self, k)) for k, v in baseline.items() if getattr(self, k) != v)


class ExportSpec(_Spec):
    """Export models to a deployable format and measure them on its runtime, with parity checks.

    ``onnx`` runs on ONNX Runtime (dynamic batch; ``fp16`` on its CUDA/TensorRT provider); ``tflite``
    on the LiteRT interpreter (batch 1); ``aoti`` is an AOTInductor fp16/bf16 build run by torch on CUDA.
    """

    format: Literal["onnx", "tflite", "aoti"] = "onnx"
    precision: Literal["fp32", "int8", "fp16", "bf16"] = "fp32"
    models: tuple[str, ...] | None = Field(None, max_length=MAX_MODELS, description="model names; default: every model")
    min_agreement: float | None = Field(
        None, ge=0, le=1, description="parity: top-1 agreement with torch; default 0.995 fp32, 0.99 fp16/bf16, 0.97 "
        "int8",
    )  # fmt: skip
    max_accuracy_loss: float | None = Field(
        None, ge=0, le=1, description="parity: clean accuracy lost against torch; default 0.02 (int8), 0.01 otherwise"
    )
    tensorrt: bool = Field(False, description="onnx fp16: ask for ONNX Runtime's TensorRT provider first")
    direct_queries: int = Field(
        100, ge=0, le=100_000, description="Square Attack queries per image on the export's own runtime (0: off)"
    )
    direct_size: int | None = Field(None, ge=1, le=MAX_IMAGES, description="images it attacks; default: all")
    calibration_size: int = Field(256, ge=1, le=MAX_IMAGES, description="training images that calibrate int8")
    per_channel: bool = Field(
        False, description="int8 per-channel weight scales; default: yes for tflite, no for onnx (see README)"
    )
    opset: int = Field(18, ge=17, le=99, description="ONNX opset")

    @model_validator(mode="before")
    @classmethod
    def _per_channel_default(cls, data: Any) -> Any:
        """TFLite's int8 spec quantizes conv weights per channel (per-tensor: 8% top-1 agreement on the
        smoke MobileNetV2, whose depthwise filters differ in range); ONNX Runtime's per-tensor QDQ
        agreed better on simple_cnn (100% vs 92.8%)."""
        if isinstance(data, dict) and "per_channel" not in data:
            return {**data, "per_channel": data.get("format") == "tflite"}
        return data

    @model_validator(mode="after")
    def _precision_fits_format(self) -> ExportSpec:
        allowed = {"onnx": ("fp32", "int8", "fp16"), "tflite": ("fp32", "int8"), "aoti": ("fp16", "bf16")}
        if self.precision not in allowed[self.format]:
            raise ValueError(f"format '{self.format}' takes precision {' | '.join(allowed[self.format])}, "
                             f"not '{self.precision}'")  # fmt: skip
        return self


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
    exports: tuple[ExportSpec, ...] = Field((), max_length=MAX_ITEMS)
    performance: PerformanceSpec = PerformanceSpec()

    @model_validator(mode="before")
    @classmethod
    def _derive_models(cls, data: Any) -> Any:
        """A model with ``compress.source`` inherits the source's ``arch`` and ``params``, and
        ``compress.ratio = [a, b]`` expands into one model per ratio, named ``<name>-r<ratio>``."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            return data
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
        if self.checks.surrogate is not None and self.checks.surrogate not in names:
            found.append(("checks.surrogate", f"no model named {shown(self.checks.surrogate, 80)}"))
        for i, ex in enumerate(self.exports):
            found += [
                (f"exports[{i}].models", f"no model named {shown(n, 80)}") for n in ex.models or () if n not in names
            ]
        problems(found)
        return self

    @property
    def check_eps(self) -> float:
        linf = [e for ev in self.evaluations if ev.norm == "linf" for e in ev.eps if e > 0]
        return self.checks.eps or (max(linf) if linf else 8 / 255)
