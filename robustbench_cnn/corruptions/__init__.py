"""Common corruptions generated on the fly: the CIFAR-10-C set of Hendrycks & Dietterich (2019) at its five
severities, with that paper's CIFAR-10 constants, in numpy, scipy and Pillow only (no torch: the edge
validator and a Raspberry Pi can run it).

These are *regenerated* corruptions ("CIFAR-10-C-style, seed s"), not the published CIFAR-10-C files: the
same formulas and constants, our own random draws (one PCG64 stream per image, from the seed, the
corruption and the image's index, the same at every severity), our motion blur in place of ImageMagick's and a
libjpeg-turbo JPEG. Frost is left out (it needs the original frost photographs).

:func:`corrupt` is deterministic: the same images, corruption, severity, seed and first index give the
same bytes in any process; an image's corruption does not depend on the batch it is in. Outputs are
8-bit, as the published set: ``uint8`` arrays ``(N, C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robustbench_cnn.corruptions import noise_blur as nb
from robustbench_cnn.corruptions import weather_digital as wd
from robustbench_cnn.corruptions.kernels import generators

SEVERITIES = (1, 2, 3, 4, 5)
SET_NAME = "CIFAR-10-C-style"


@dataclass(frozen=True)
class Corruption:
    """One corruption: its family (noise, blur, weather, digital) and its function."""

    name: str
    family: str
    apply: Callable[[np.ndarray, int, list[np.random.Generator]], np.ndarray]


# the published order (Hendrycks & Dietterich 2019, fig. 1, frost left out); an index is part of the seed
CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        Corruption("gaussian_noise", "noise", nb.gaussian_noise),
        Corruption("shot_noise", "noise", nb.shot_noise),
        Corruption("impulse_noise", "noise", nb.impulse_noise),
        Corruption("defocus_blur", "blur", nb.defocus_blur),
        Corruption("glass_blur", "blur", nb.glass_blur),
        Corruption("motion_blur", "blur", nb.motion_blur),
        Corruption("zoom_blur", "blur", nb.zoom_blur),
        Corruption("snow", "weather", wd.snow),
        Corruption("fog", "weather", wd.fog),
        Corruption("brightness", "weather", wd.brightness),
        Corruption("contrast", "digital", wd.contrast),
        Corruption("elastic_transform", "digital", wd.elastic_transform),
        Corruption("pixelate", "digital", wd.pixelate),
        Corruption("jpeg_compression", "digital", wd.jpeg_compression),
    )
}
_INDEX = {name: i for i, name in enumerate(CORRUPTIONS)}


def family(name: str) -> str:
    """The family of corruption ``name`` (noise, blur, weather, digital); ``other`` for a name not in the set."""
    return CORRUPTIONS[name].family if name in CORRUPTIONS else "other"


def corrupt(images: np.ndarray, name: str, severity: int, seed: int, first_index: int = 0) -> np.ndarray:
    """``images`` ``(N, C, H, W)`` in [0, 1] (float) corrupted by ``name`` at ``severity`` (1..5), as
    ``uint8`` ``(N, C, H, W)``. Image ``i`` draws from the stream of (seed, corruption,
    ``first_index + i``)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption '{name}'; choose one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity} is not one of 1..5")
    x = np.clip(np.asarray(images, dtype=np.float64), 0, 1).transpose(0, 2, 3, 1)
    rngs = generators(seed, _INDEX[name], first_index, len(x))
    out = CORRUPTIONS[name].apply(x, severity, rngs)
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8).transpose(0, 3, 1, 2)


__all__ = ["CORRUPTIONS", "SET_NAME", "SEVERITIES", "Corruption", "corrupt", "family"]
