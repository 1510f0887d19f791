"""A fake accelerator for CPU-only test runs: catches device faults without a GPU.

CI has no GPU, and a CUDA device cannot be faked on a machine without a driver (autograd asks the
CUDA runtime for a stream as soon as a parameter on "cuda" gets a gradient). What a GPU run trips
over, though, is rarely CUDA itself: it is a module, tensor, generator or attack left on the CPU
while the data is on the accelerator. ``fake_accelerator()`` provides such a second device:
``torch.device("meta")`` (whose device guard needs no runtime) stands in for the GPU. Tensors on
it are CPU tensors wrapped in :class:`FakeDeviceTensor`, whose ``.device`` says ``meta``; the data
is real, so values, ``.item()`` and autograd work. Factory functions naming the device produce
them, ``.to(FAKE)`` wraps, ``.cpu()`` unwraps, and every operation checks its operands as the CUDA
backend does, so these faults raise here too:

- mixing a device and a (non-scalar) CPU tensor in one op: ``Expected all tensors to be on the same
  device, but found at least two devices, meta and cpu!``;
- a generator on another device than the op it feeds: ``Expected a 'meta' device type for generator``;
- ``.numpy()`` of a device tensor: ``can't convert meta device type tensor to numpy``.

Allowed as on CUDA: 0-dim CPU tensors (scalars), CPU index tensors in indexing ops, and
cross-device ``copy_``. Branches that test ``device.type == "cuda"`` are not taken on this device;
they are covered by their own tests. Kernels run on the CPU, so timings mean nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

FAKE = torch.device("meta")
CPU = torch.device("cpu")
_INDEXING = {"index.Tensor", "index_put.default", "index_put_.default", "_index_put_impl_.default"}
_GENERATOR_DEVICE: dict[int, torch.device] = {}


class DeviceMismatch(RuntimeError):
    """What the CUDA backend raises for operands on different devices."""


class FakeDeviceTensor(torch.Tensor):
    """A CPU tensor that reports the fake device as its own."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> FakeDeviceTensor:
        out = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, inner.shape, strides=inner.stride(), storage_offset=inner.storage_offset(), dtype=inner.dtype,
            layout=inner.layout, device=FAKE, requires_grad=inner.requires_grad,
        )  # fmt: skip
        out.inner = inner
        return out

    def __repr__(self) -> str:  # type: ignore[override]
        return f"FakeDeviceTensor({self.inner!r})"

    def numpy(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise TypeError("can't convert meta device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                        "to host memory first.")  # fmt: skip

    def __format__(self, spec: str) -> str:
        return format(self.item(), spec) if self.dim() == 0 else super().__format__(spec)

    def __tensor_flatten__(self):
        return ["inner"], None

    @staticmethod
    def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):
        return FakeDeviceTensor(inner_tensors["inner"])

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


def _on_fake(device: Any) -> bool:
    return device is not None and torch.device(device).type == FAKE.type


def _check(func, args, kwargs) -> bool:
    """Raise like CUDA for mixed-device operands; return whether the op runs on the fake device."""
    name = func._schema.name.split("::")[-1] + "." + (func._overloadname or "default")
    fake_args, cpu_args = [], []

    def visit(t):
        if isinstance(t, FakeDeviceTensor):
            fake_args.append(t)
        elif isinstance(t, torch.Tensor) and t.dim() > 0:
            cpu_args.append(t)
        return t

    tree_map(visit, (args, kwargs))
    on_fake = bool(fake_args) or _on_fake(kwargs.get("device"))
    if name.startswith("copy_") or name.startswith("_to_copy") or name in _INDEXING:
        return on_fake
    if on_fake and cpu_args:
        raise DeviceMismatch(f"Expected all tensors to be on the same device, but found at least two devices, "
                             f"meta and cpu! (in {name})")  # fmt: skip
    gen = kwargs.get("generator")
    if gen is not None:
        gen_device = _GENERATOR_DEVICE.get(gen._cdata, CPU)
        op_device = FAKE if on_fake else CPU
        if gen_device.type != op_device.type:
            raise DeviceMismatch(f"Expected a '{op_device.type}' device type for generator but found "
                                 f"'{gen_device.type}' (in {name})")  # fmt: skip
    return on_fake


def _dispatch(func, args, kwargs):
    name = func._schema.name.split("::")[-1]
    if name in ("_to_copy", "to"):
        src, target = args[0], kwargs.get("device")
        inner = src.inner if isinstance(src, FakeDeviceTensor) else src
        to_fake = _on_fake(target) or (target is None and isinstance(src, FakeDeviceTensor))
        out = func(inner, **{k: v for k, v in kwargs.items() if k != "device"})
        return FakeDeviceTensor(out) if to_fake else out
    on_fake = _check(func, args, kwargs)
    wrappers = {}  # id(inner) -> its wrapper: in-place ops and out= return the caller's own tensor

    def unwrap(t):
        if isinstance(t, FakeDeviceTensor):
            wrappers[id(t.inner)] = t
            return t.inner
        return t

    args, kwargs = tree_map(unwrap, args), tree_map(unwrap, kwargs)
    if _on_fake(kwargs.get("device")):
        kwargs = {**kwargs, "device": CPU}
    out = func(*args, **kwargs)
    if not on_fake:
        return out

    def wrap(t):
        if not isinstance(t, torch.Tensor):
            return t
        own = wrappers.get(id(t))
        return own if own is not None else FakeDeviceTensor(t)

    return tree_map(wrap, out)


class _FakeDeviceMode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


class FakeGenerator(torch.Generator):
    """A CPU generator that remembers the device it was asked for."""

    def __new__(cls, device: Any = "cpu"):
        gen = super().__new__(cls, "cpu")
        _GENERATOR_DEVICE[gen._cdata] = torch.device(device) if device is not None else CPU
        return gen

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return _GENERATOR_DEVICE.get(self._cdata, CPU)


@contextlib.contextmanager
def fake_accelerator() -> Iterator[torch.device]:
    """Within this block :data:`FAKE` is a device backed by the CPU (see the module docstring)."""
    # inference tensors cannot wrap others: no_grad keeps the same numbers without that restriction
    with (
        mock.patch("torch.Generator", FakeGenerator),
        mock.patch("torch.inference_mode", torch.no_grad),
        _FakeDeviceMode(),
    ):
        yield FAKE
