"""Read a checkpoint into a :class:`~robustbench_cnn.models.normalize.Normalized` model, never unpickling code.

Formats (detected from the file's first bytes, not its name):

- **safetensors** (what the cache writes; its ``structure`` metadata narrows a pruned model);
- **torch.save** state dicts (zip or legacy), read with ``torch.load(weights_only=True,
  map_location="cpu")``: tensors and plain containers only, so a pickle carrying code is refused
  and its payload never runs. ``{"state_dict": {...}}`` / ``{"model": {...}}`` wrappers and a
  ``module.`` prefix (DataParallel) are unwrapped.

``fmt``: ``"wrapped"`` -- keys of the whole model (``net.*`` plus the ``mean``/``std`` buffers);
``"net"`` -- a bare network's state dict (``conv1.weight``, ...): keys get the ``net.`` prefix and
mean/std stay the model's (the dataset's); ``"auto"`` -- ``wrapped`` if any key starts with
``net.``, else ``net``. ``torch.export`` archives (``.pt2``) are refused: ``torch.export.load``
unpickles with ``weights_only=False``.

Every tensor must have the model's shape and kind of dtype (floating where the model's is) and be
finite; any problem is one :class:`CheckpointError` line naming the file.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Literal

import torch
from pydantic import ConfigDict, TypeAdapter, ValidationError
from safetensors import SafetensorError, safe_open
from torch import nn

from robustbench_cnn.errors import CheckpointError, one_line
from robustbench_cnn.models import structure

CheckpointFormat = Literal["auto", "wrapped", "net"]


class UnusableCheckpoint(CheckpointError):
    """A checkpoint file that cannot be used as given: bad input (exit code 2)."""

    exit_code = 2


_STRUCTURE = TypeAdapter(dict[str, dict[str, int]], config=ConfigDict(strict=True))
_NORMALIZATION = ("mean", "std")
_SHOWN = 3  # keys listed per kind of mismatch


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _kind(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(9)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                if any(n.endswith("/archive_format") for n in zf.namelist()):
                    return "pt2"
        except zipfile.BadZipFile:
            pass
        return "torch"
    if head[:1] == b"\x80":  # a legacy (non-zip) torch.save pickle
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, int]] | None]:
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    stored = meta.get(structure.METADATA_KEY)
    if stored is None:
        return state, None
    try:
        layers = _STRUCTURE.validate_python(json.loads(stored))
        structure.check_structure(layers)
    except (json.JSONDecodeError, ValidationError, RecursionError):
        raise UnusableCheckpoint(f"checkpoint {path}: malformed '{structure.METADATA_KEY}' metadata") from None
    except ValueError as exc:
        raise UnusableCheckpoint(f"checkpoint {path}: '{structure.METADATA_KEY}' metadata: {exc}") from None
    return state, layers


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise UnusableCheckpoint(
            f"checkpoint {path} holds Python objects beyond tensors and was refused (never unpickled); "
            "save torch.save(model.state_dict(), path) or a .safetensors file"
        ) from None
    except Exception as exc:  # a damaged archive: torch's weights-only reader raises many kinds (found by fuzzing)
        raise UnusableCheckpoint(f"checkpoint {path} is damaged and cannot be read ({type(exc).__name__}); "
                                 "re-export or re-download it") from None  # fmt: skip
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UnusableCheckpoint(f"checkpoint {path} is not a state dict (a mapping of names to tensors)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, int]] | None]:
    """``(state dict, stored layer structure or None)`` of a checkpoint file; see the module docstring."""
    if not path.is_file():
        raise UnusableCheckpoint(f"checkpoint {path} does not exist or is not a file")
    kind = _kind(path)
    if kind == "pt2":
        raise UnusableCheckpoint(
            f"checkpoint {path} is a torch.export archive, which torch.export.load unpickles unsafely; "
            "save the model's state_dict as .safetensors instead"
        )
    if kind == "unknown":
        raise UnusableCheckpoint(f"checkpoint {path} is neither safetensors nor a torch.save state dict")
    if kind == "torch":
        return _read_torch(path), None
    return _read_safetensors(path)


def resolve_format(state: dict[str, torch.Tensor], fmt: CheckpointFormat) -> CheckpointFormat:
    """``auto`` made concrete: ``wrapped`` if any key starts with ``net.``, else ``net`` (a bare network)."""
    if fmt != "auto":
        return fmt
    return "wrapped" if any(k.startswith("net.") for k in state) else "net"


def _prefix(state: dict[str, torch.Tensor], model: nn.Module, fmt: CheckpointFormat) -> dict[str, torch.Tensor]:
    fmt = resolve_format(state, fmt)
    if fmt == "wrapped" or not hasattr(model, "net"):
        return state
    own = model.state_dict()
    return {**{n: own[n] for n in _NORMALIZATION if n in own}, **{f"net.{k}": v for k, v in state.items()}}


def _old_batchnorm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fill the BatchNorm ``num_batches_tracked`` counters a state dict saved before PyTorch 0.4.1 lacks
    (only where the layer's running statistics are there): they count training steps and change no
    output of a layer with a momentum, which every built-in architecture's BatchNorm has."""
    own = model.state_dict()
    suffix = "num_batches_tracked"
    missing = {k: own[k] for k in own if k.endswith(suffix) and k not in state
               and k.removesuffix(suffix) + "running_mean" in state}  # fmt: skip
    return {**state, **missing} if missing else state


def _listed(keys: list[str]) -> str:
    more = f", ... ({len(keys)})" if len(keys) > _SHOWN else ""
    return ", ".join(one_line(k, 200) for k in keys[:_SHOWN]) + more


def check_state(state: dict[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """Keys, shapes, dtypes and finiteness of ``state`` against ``model``; one line on the first problem."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        parts = [f"{len(missing)} missing key(s) ({_listed(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_listed(unexpected)})" if unexpected else ""]  # fmt: skip
        hint = "; checkpoint_format = 'net' for a bare network's state dict" if missing and unexpected else ""
        raise UnusableCheckpoint(f"checkpoint {path} does not fit the model: {', '.join(p for p in parts if p)}{hint}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise UnusableCheckpoint(
                f"checkpoint {path} does not fit the model: {one_line(key, 200)} has shape {tuple(tensor.shape)}, "
                f"the model {tuple(own[key].shape)}"
            )
        if tensor.is_floating_point() != own[key].is_floating_point():
            raise UnusableCheckpoint(
                f"checkpoint {path}: {one_line(key, 200)} has dtype {tensor.dtype}, the model {own[key].dtype}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UnusableCheckpoint(
                f"checkpoint {path}: {one_line(key, 200)} holds NaN or infinite values; the weights are unusable"
            )


def load_checkpoint(model: nn.Module, path: Path, fmt: CheckpointFormat = "auto") -> None:
    """Fill ``model`` from ``path`` (narrowing pruned layers first); :class:`CheckpointError` otherwise."""
    try:
        state, layers = read_state(path)
        state = _old_batchnorm(_prefix(state, model, fmt), model)
        if layers is not None:
            structure.apply_structure(model, layers, {k: list(v.shape) for k, v in state.items()})
        check_state(state, model, path)
        model.load_state_dict(state, strict=True)
    except CheckpointError:
        raise
    except (SafetensorError, RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = _first_line(exc)
        raise UnusableCheckpoint(f"checkpoint {path} is corrupt or does not fit the model: {reason}") from None
