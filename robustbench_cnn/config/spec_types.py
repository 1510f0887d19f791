"""The ground of the suite's typed specs: bounds, the strict base model, and the field types (numbers
that accept exact fractions, safe names, path text, registered names). Imports nothing of the
project but its error and name helpers."""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from robustbench_cnn.config.paths import check_name, check_path_text
from robustbench_cnn.errors import shown
from robustbench_cnn.registry import hook, registry

MAX_MODELS = 256
MAX_ITEMS = 64  # eps, radii, evaluations, exports, ratios, params, ...
MAX_SEED = 2**32 - 1  # numpy's seed range; torch's is wider
MAX_STEPS = 100_000
MAX_IMAGES = 10_000_000
MAX_BATCH = 65_536
MAX_STEP_SIZE = 10.0  # an attack step on [0, 1] images; larger only clips
MAX_TEMPERATURE = 1_000.0  # softmax temperature of distillation (Papernot et al. used up to 100)
MAX_LOSS_WEIGHT = 1_000.0  # a loss term's weight, e.g. TRADES' beta (1 to 6 in the paper)


class SpecBase(BaseModel):
    """Frozen, strict: unknown keys, inf and nan are errors; strings bounded."""

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


def _registered(kind: str) -> AfterValidator:
    """A name that must be registered in the registry :data:`robustbench_cnn.registry.HOOKS` names."""

    def check(name: str) -> str:
        registry(kind).get(name)
        return name

    return AfterValidator(check)


def _arch(name: str) -> str:
    """A registered name or a source form (``torchvision:NAME``, ``timm:NAME``, ``pkg.module:factory``)."""
    hook("resolve_arch")(name)
    return name


DatasetName = Annotated[str, _registered("datasets")]
ArchName = Annotated[str, AfterValidator(_arch)]
AttackName = Annotated[str, _registered("attacks")]
