"""The raw latency samples behind each latency row: one float32 ``.npy`` (milliseconds per timed call,
in call order) per (model, format, runtime, compression, batch_size), in the run's ``latency_samples/``.

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


def samples_dir(run: Path) -> Path:
    """Where a run directory (or a results CSV) keeps its samples."""
    run = Path(run)
    return run / DIRNAME if run.is_dir() else run.with_name(f"{run.stem}.{DIRNAME}")


def write_samples(directory: Path, key: SampleKey, samples_ms: np.ndarray) -> Path:
    """Store one cell's samples (float32 ms, 1-D) atomically; returns the file."""
    data = np.ascontiguousarray(samples_ms, dtype=np.float32).reshape(-1)
    path = Path(directory) / key.filename
    atomic_write(path, lambda fh: np.save(fh, data, allow_pickle=False))
    return path


def read_samples(directory: Path, key: SampleKey) -> np.ndarray | None:
    """The samples stored for ``key`` (float64 ms), or None when there are none."""
    path = Path(directory) / key.filename
    if not path.is_file():
        return None
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
