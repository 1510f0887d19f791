"""Building blocks of the corruptions, numpy + scipy only: per-image random generators, zooming about the
centre, blur kernels (an anti-aliased disk, a one-sided motion line), a plasma fractal, Gaussian filtering
of an image batch. Images here are float64 arrays ``(N, H, W, C)`` in [0, 1]."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def generators(seed: int, corruption: int, first: int, n: int) -> list[np.random.Generator]:
    """One generator per image, from (seed, corruption, image index): an image's corruption does not depend
    on the batch it is in, and PCG64 gives the same draws on every platform. The severity is not part of
    the stream: an image meets the same random draws at every severity, only scaled (common random
    numbers), so severities differ by their constants alone."""
    return [np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, corruption, first + i])))
            for i in range(n)]  # fmt: skip


def gaussian(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """Gaussian filter over the spatial axes of ``(N, H, W, C)`` (or ``(H, W)``) only."""
    sigmas = (0.0, sigma, sigma, 0.0) if x.ndim == 4 else (sigma, sigma)
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom ``(H, W, C)`` (or a batch ``(N, H, W, C)``, each image alike) by ``factor`` >= 1 about its
    centre (bilinear) and crop back to ``(H, W)``."""
    lead = x.ndim - 3  # 1 for a batch
    h, w = x.shape[lead : lead + 2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw, :]
    lo, frac = _linear(ch, round(ch * factor), h)  # scipy.ndimage.zoom's grid (order 1), the kept rows only
    rows = crop[..., lo, :, :] * (1 - frac)[:, None, None] + crop[..., lo + 1, :, :] * frac[:, None, None]
    lo, frac = _linear(cw, round(cw * factor), w)
    return rows[..., :, lo, :] * (1 - frac)[:, None] + rows[..., :, lo + 1, :] * frac[:, None]


def _linear(n_in: int, n_out: int, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of ``n_in`` samples onto ``n_out`` (ends aligned, as ``ndimage.zoom``), for the
    ``keep`` central outputs: the lower neighbour of each and its weight on the upper one."""
    start = (n_out - keep) // 2
    pos = np.arange(start, start + keep) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    lo = np.minimum(np.floor(pos).astype(np.int64), max(n_in - 2, 0))
    return lo, pos - lo


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """A normalized disk of ``radius`` on a 17x17 grid (radius <= 8), anti-aliased by a 3x3 Gaussian of
    ``alias_blur`` (Hendrycks & Dietterich's defocus kernel)."""
    size = 8 if radius <= 8 else int(np.ceil(radius))
    ax = np.arange(-size, size + 1)
    xx, yy = np.meshgrid(ax, ax)
    kernel = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    kernel /= kernel.sum()
    taps = np.exp(-(np.arange(-1, 2) ** 2) / (2 * alias_blur**2))  # a 3-tap Gaussian, as a 3x3 blur
    taps /= taps.sum()
    return ndimage.correlate(kernel, np.outer(taps, taps), mode="mirror")


def motion_kernel(radius: int, sigma: float, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """A one-sided motion blur: offsets ``(K, 2)`` (dy, dx) along ``angle`` and their weights, Gaussian
    in the distance travelled (ImageMagick's motion blur, which CIFAR-10-C used, is one-sided)."""
    steps = np.arange(radius + 1, dtype=np.float64)
    weights = np.exp(-(steps**2) / (2 * sigma**2))
    weights /= weights.sum()
    theta = np.deg2rad(angle_deg)
    return np.stack([steps * np.sin(theta), steps * np.cos(theta)], axis=1), weights


def motion_blur_image(x: np.ndarray, radius: int, sigma: float, angle_deg: float) -> np.ndarray:
    """``(H, W, C)`` blurred along a line: the weighted mean of the image shifted by each offset (bilinear,
    edges repeated)."""
    offsets, weights = motion_kernel(radius, sigma, angle_deg)
    out = np.zeros_like(x)
    for (dy, dx), w in zip(offsets, weights, strict=True):
        out += w * ndimage.shift(x, (dy, dx, 0), order=1, mode="nearest")
    return out


def plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A ``(size, size)`` diamond-square height map in [0, 1] (``size`` a power of two), the fog layer."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half:size:step, half:size:step] = wibbled(square)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        across = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:size:step, half:size:step] = wibbled(across)
        down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, 0:size:step] = wibbled(down)
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 affine map taking three (x, y) points ``src`` to ``dst``."""
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


def gray(x: np.ndarray) -> np.ndarray:
    """Luma (ITU-R BT.601) of ``(..., C)``: the image itself when it has one channel."""
    if x.shape[-1] == 1:
        return x[..., 0]
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
