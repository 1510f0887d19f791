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
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


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


class DatasetSpec(_Spec):
    """Which data, where it lives, and how much of it to use."""

    name: str = "digits"
    data_dir: str | None = Field(None, description="relative paths resolve against the suite file's folder")
    download: bool = Field(False, description="fetch the official archives if missing (needs the internet)")
    image_size: int | None = Field(None, ge=4, le=512, description="resize images to this square size")
    train_size: int | None = Field(None, ge=1, description="seeded subset of the training split")
    eval_size: int | None = Field(None, ge=1, description="seeded subset of the evaluation split")
    split_seed: int = 0

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from robustbench_cnn.data import DATASETS

        DATASETS.get(v)
        return v


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


class ModelSpec(_Spec):
    """One model: an architecture, its parameters, and either a recipe or a checkpoint."""

    name: str = Field(min_length=1)
    arch: str
    params: dict[str, bool | int | float | str] = Field(default_factory=dict)
    train: TrainSpec = TrainSpec()
    checkpoint: str | None = Field(None, description="a .safetensors file to load instead of training")

    @field_validator("arch")
    @classmethod
    def _known(cls, v: str) -> str:
        from robustbench_cnn.models import MODELS

        MODELS.get(v)
        return v

    @model_validator(mode="after")
    def _params_fit_arch(self) -> ModelSpec:
        from robustbench_cnn.models import check_params

        check_params(self.arch, self.params)
        return self


class EvalSpec(_Spec):
    """One attack swept over a list of eps; threat model ``norm`` on [0, 1] images."""

    attack: str
    norm: Literal["linf", "l2"] = "linf"
    eps: tuple[Number, ...] = Field(min_length=1)
    steps: int = Field(10, ge=1)
    step_size: Number | None = Field(None, gt=0, description="default 2.5 * eps / steps (Madry et al.)")
    restarts: int = Field(1, ge=1)

    @field_validator("attack")
    @classmethod
    def _known(cls, v: str) -> str:
        from robustbench_cnn.attacks import ATTACKS

        ATTACKS.get(v)
        return v

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

    @model_validator(mode="after")
    def _unique_model_names(self) -> SuiteSpec:
        seen: set[str] = set()
        for m in self.models:
            if m.name in seen:
                raise ValueError(f"model name '{m.name}' is used twice; names must be unique")
            seen.add(m.name)
        return self
