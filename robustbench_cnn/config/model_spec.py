"""The per-model part of a suite's spec: the dataset, a training recipe, defense and compression
settings (each registered plugin's own spec class), preprocessing, and a model entry (``[[models]]``,
a zoo checkpoint's defaults filled in)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from robustbench_cnn.config.problems import problems, toml_type, validated
from robustbench_cnn.config.spec_types import (
    MAX_BATCH,
    MAX_IMAGES,
    MAX_ITEMS,
    MAX_SEED,
    ArchName,
    DatasetName,
    Name,
    PathText,
)
from robustbench_cnn.config.spec_types import (
    SpecBase as _Spec,
)
from robustbench_cnn.errors import RobustBenchError, did_you_mean, shown
from robustbench_cnn.registry import hook, registry
from robustbench_cnn.zoo import PREFIX, ZOO, Preprocess, is_zoo


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
        spec, found = validated(registry(registry_name).get(value["name"]).spec, value, value["name"])
        problems(found)
        return spec

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

        name = self.zoo
        if name is None:
            return []
        e = ZOO.get(name)
        if e is None:
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

        return self.checkpoint.removeprefix(PREFIX) if is_zoo(self.checkpoint) else None  # type: ignore[union-attr]


NEEDS_PREPROCESS = ("a bare network's checkpoint does not say what input it expects; set preprocess = 'none' "
                    "(raw [0, 1] pixels), 'dataset' (the dataset's mean/std) or "
                    "{ mean = [...], std = [...] }")  # fmt: skip


def zoo_entry(m: ModelSpec) -> Any:

    return ZOO.get(m.zoo) if m.zoo is not None else None


def from_zoo(m: Any) -> Any:
    """A model with ``checkpoint = "zoo:NAME"`` takes the entry's arch, params and preprocessing (a bare
    network's state dict) unless it sets them; an unknown name is reported by the model's own check."""

    if not isinstance(m, dict) or not isinstance(m.get("checkpoint"), str) or not is_zoo(m["checkpoint"]):
        return m
    e = ZOO.get(m["checkpoint"].removeprefix(PREFIX))
    if e is None or e.kind != "torch":
        return {"arch": "simple_cnn", **m}  # the checkpoint check names the problem
    return {"arch": e.arch, "params": dict(e.params), "preprocess": e.preprocess, "checkpoint_format": "net", **m}
