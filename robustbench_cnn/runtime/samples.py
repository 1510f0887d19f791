"""The raw latency samples behind each latency row: one float32 ``.npy`` (milliseconds per timed call,
in call order) per (model, format, runtime, compression, batch_size), in the run's ``latency_samples/``,
and beside it ``<same stem>.waited.npy``: per call, how long the process's threads waited for a CPU
(:mod:`robustbench_cnn.runtime.timing`), which tells the gate which calls another process slowed.

Percentiles alone admit no statistical test; with the samples, ``compare`` can ask whether a new
run's per-call times are really shifted (Mann-Whitney U) rather than read two noisy quantiles.
A results CSV outside a run directory finds its samples in ``<stem>.latency_samples/`` beside it.
Files are written atomically and read with ``allow_pickle=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from robustbench_cnn.atomic import atomic_write
from robustbench_cnn.errors import RobustBenchError

DIRNAME = "latency_samples"
MAX_SAMPLES = 10_000_000  # far above the harness's max_repeats; a larger file is not ours


class SamplesError(RobustBenchError):
    """A latency-samples file is corrupt or not what its name promises (exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class SampleKey:
    """Which latency row the samples belong to (the row's columns of the same names)."""

    model: str
    format: str
    runtime: str
    compression: str
    batch_size: int

    @property
    def filename(self) -> str:
        """``<model>+<format>+<runtime>+<compression>+bs<batch_size>.npy``, each part percent-encoded
        (so ``+``, ``/`` and other odd characters inside a name can never collide or escape)."""
        parts = [quote(str(p), safe="") for p in (self.model, self.format, self.runtime, self.compression)]
        return "+".join([*parts, f"bs{int(self.batch_size)}"]) + ".npy"

    @property
    def waited_filename(self) -> str:
        """``<filename stem>.waited.npy``: the per-call CPU waits beside the timings."""
        return self.filename[: -len(".npy")] + ".waited.npy"


def samples_dir(run: Path) -> Path:
    """Where a run directory (or a results CSV) keeps its samples."""
    run = Path(run)
    return run / DIRNAME if run.is_dir() else run.with_name(f"{run.stem}.{DIRNAME}")


def write_samples(directory: Path, key: SampleKey, samples_ms: np.ndarray, waited_ms: np.ndarray | None = None) -> Path:
    """Store one cell's samples (float32 ms, 1-D) atomically, and with ``waited_ms`` (one per sample) the
    per-call CPU waits beside them; returns the samples file."""
    data = np.ascontiguousarray(samples_ms, dtype=np.float32).reshape(-1)
    path = Path(directory) / key.filename
    if waited_ms is not None:
        waited = np.ascontiguousarray(waited_ms, dtype=np.float32).reshape(-1)
        if waited.shape != data.shape:
            raise ValueError(f"{key.filename}: {waited.size} waits for {data.size} samples")
        atomic_write(Path(directory) / key.waited_filename, lambda fh: np.save(fh, waited, allow_pickle=False))
    atomic_write(path, lambda fh: np.save(fh, data, allow_pickle=False))
    return path


def _load(path: Path) -> np.ndarray:
    """A 1-D float32 ``.npy`` of finite, non-negative numbers as float64, or a one-line SamplesError."""
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)  # the header first: no allocation a corrupt shape asks for
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(fh)
            if dtype != np.float32 or len(shape) != 1 or not 0 < shape[0] <= MAX_SAMPLES:
                raise ValueError(f"holds {dtype} of shape {shape}, not 1-D float32 samples")
            fh.seek(0)
            data = np.load(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise SamplesError(
            f"{path}: not a latency-samples file ({exc}); delete it or re-run the latency cell"
        ) from None
    if not np.isfinite(data).all() or (data < 0).any():
        raise SamplesError(f"{path}: latency samples must be finite and >= 0; delete it or re-run the latency cell")
    return data.astype(np.float64)


def read_samples(directory: Path, key: SampleKey) -> np.ndarray | None:
    """The samples stored for ``key`` (float64 ms), or None when there are none."""
    path = Path(directory) / key.filename
    return _load(path) if path.is_file() else None


def read_waited(directory: Path, key: SampleKey, count: int) -> np.ndarray | None:
    """The per-call CPU waits stored for ``key`` (float64 ms), or None when there are none (runs from
    before they were recorded, or a kernel without run-queue delays); ``count`` is the number of samples
    they must match."""
    path = Path(directory) / key.waited_filename
    if not path.is_file():
        return None
    waited = _load(path)
    if len(waited) != count:
        raise SamplesError(f"{path}: {len(waited)} waits for {count} samples; delete it or re-run the latency cell")
    return waited
