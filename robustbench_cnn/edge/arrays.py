"""Load the arrays of an edge bundle's ``.npz`` files without trusting them (numpy + stdlib only).

Each array is a ``.npy`` member of a zip file. Before anything is inflated, the member's npy header
is read (``np.lib.format.read_magic`` / ``read_array_header_*``) and its dtype and shape compared with
what the caller expects; the array's size must fit the member's declared uncompressed size
(``ZipInfo.file_size``) and stay under a cap, so a small file that inflates to gigabytes (a
decompression bomb) is refused unread. Pickled (object) arrays are never loaded.
"""

from __future__ import annotations

import math
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from robustbench_cnn.edge.bundle_format import MAX_ARRAY_BYTES
from robustbench_cnn.edge.manifest import REBUILD, BundleError


def _header(fh, where: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"npy format {version}")
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile, tokenize.TokenError) as exc:
        # numpy's header parser falls back on tokenize for legacy headers: hostile ones end up there
        raise BundleError(where, key, f"not a readable npy array ({str(exc)[:100]})") from None
    if fortran:
        raise BundleError(where, key, "a Fortran-ordered array (the bundler writes C order)")
    if any(d < 0 for d in shape):
        raise BundleError(where, key, f"shape {tuple(shape)} has a negative dimension")
    return tuple(shape), dtype


def load_arrays(path: Path, where: Path, expect: dict[str, tuple[str, tuple[int | None, ...]]],
                max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:  # fmt: skip
    """``{key: array}`` for ``expect = {key: (dtype, shape)}`` (None in a shape matches any length).

    ``path``: the verified, confined file; ``where``: how errors name it. Keys not in ``expect`` are
    left unread.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            return {key: _member(zf, where, key, dtype, shape, max_bytes) for key, (dtype, shape) in expect.items()}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise BundleError(where, "npz", f"not a readable npz file ({str(exc)[:100]})") from None


def _member(zf: zipfile.ZipFile, where: Path, key: str, dtype: str, shape: tuple[int | None, ...],
            max_bytes: int) -> np.ndarray:  # fmt: skip
    try:
        info = zf.getinfo(f"{key}.npy")
    except KeyError:
        raise BundleError(where, key, "no such array in the file") from None
    if info.file_size > max_bytes + 4096:
        raise BundleError(where, key, f"inflates to {info.file_size} bytes (> {max_bytes} allowed)", REBUILD)
    with zf.open(info) as fh:  # zlib/CRC errors surface in load_arrays
        got_shape, got_dtype = _header(fh, where, key)
        want = np.dtype(dtype)
        if got_dtype != want:
            raise BundleError(where, key, f"dtype {got_dtype}, expected {want}")
        if len(got_shape) != len(shape) or any(w not in (None, got_shape[i]) for i, w in enumerate(shape)):
            shown = tuple("N" if w is None else w for w in shape)
            raise BundleError(where, key, f"shape {got_shape}, expected {shown}")
        nbytes = math.prod(got_shape) * want.itemsize
        if nbytes > max_bytes or nbytes > info.file_size - fh.tell():
            raise BundleError(where, key, f"declares {nbytes} bytes, the file holds {info.file_size - fh.tell()}")
        data = fh.read(nbytes)
    if len(data) != nbytes:
        raise BundleError(where, key, f"truncated: {len(data)} of {nbytes} bytes")
    return np.frombuffer(data, dtype=want).reshape(got_shape)
