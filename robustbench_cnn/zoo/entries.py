"""The zoo's records: a published model, its preprocessing and its published figures with their exact
protocol (RobustBench's "claimed" accuracy beside the measured one). Plain frozen dataclasses:
nothing here imports torch or the suite machinery."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocess(BaseModel):
    """What a network expects in front of its first layer: ``(x * scale - mean) / std`` for images
    ``x`` in [0, 1], where ``scale`` is 1 for ``input_range = "0..1"`` and 255 for ``"0..255"``. One
    value per channel, or one for all. It becomes the model's normalization layer, so attacks,
    exports and edge runtimes all see images in [0, 1]."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    mean: tuple[float, ...] = Field((0.0,), min_length=1, max_length=16)
    std: tuple[Annotated[float, Field(gt=0)], ...] = Field((1.0,), min_length=1, max_length=16)
    input_range: Literal["0..1", "0..255"] = "0..1"

    @model_validator(mode="after")
    def _same_length(self) -> Preprocess:
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}; give one per channel")
        return self

    @property
    def scale(self) -> float:
        return 255.0 if self.input_range == "0..255" else 1.0

    def on_unit_images(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of the equivalent normalization of [0, 1] images: ``(x - m/s) / (sd/s)``."""
        return tuple(m / self.scale for m in self.mean), tuple(s / self.scale for s in self.std)

    def describe(self) -> str:
        if self.mean == (0.0,) and self.std == (1.0,):
            return "none (raw [0, 1])" if self.scale == 1 else "raw 0..255"
        mean, std = ", ".join(f"{m:g}" for m in self.mean), ", ".join(f"{s:g}" for s in self.std)
        return f"mean ({mean}), std ({std}) on {self.input_range}"


RAW = Preprocess()
IMAGENET = Preprocess(mean=IMAGENET_MEAN, std=IMAGENET_STD)


@dataclass(frozen=True)
class Figure:
    """One published number and the exact protocol behind it.

    ``kind``: ``clean`` (clean accuracy), ``attack`` (robust accuracy under the published attack, as
    the suite row ``attack`` at ``norm``/``eps`` with these ``steps``/``step_size``), ``best_attack``
    (the strongest published attack: compared with the suite's worst case) or ``certified`` (a
    certified lower bound on robust accuracy: no correct attack may go below it)."""

    kind: Literal["clean", "attack", "best_attack", "certified"]
    value: float  # a fraction of the images
    attack: str = ""  # the suite's attack name (clean: empty; best_attack/certified: compared with worst_case)
    norm: str = ""
    eps: float = 0.0
    steps: int | None = None
    step_size: float | None = None
    random_start: bool | None = None
    loss: str = ""
    images: int = 10_000
    name: str = ""  # a short name for tables, e.g. "PGD-40 (advertorch)"
    protocol: str = ""  # the published protocol in words

    @property
    def label(self) -> str:
        if self.kind == "clean":
            return "clean"
        return f"{self.name or self.attack} @ {self.norm} {self.eps:g}"


@dataclass(frozen=True)
class ZooEntry:
    """A published model: its file (identified by sha256), architecture, preprocessing, dataset,
    provenance and published figures. ``kind = "artifact"``: an edge build only (no torch weights),
    measured on its own runtime."""

    name: str
    file: str
    sha256: str
    dataset: str
    preprocess: Preprocess
    source: str
    license: str
    arch: str = ""
    params: Mapping[str, int | float | str | bool] = field(default_factory=lambda: MappingProxyType({}))
    kind: Literal["torch", "artifact"] = "torch"
    figures: tuple[Figure, ...] = ()
    threat: tuple[str, float] | None = None  # (norm, eps) the model was trained or certified for
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) of the images it was published on
    note: str = ""
