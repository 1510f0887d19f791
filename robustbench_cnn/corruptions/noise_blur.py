"""Noise and blur corruptions with the CIFAR-10-C constants of Hendrycks & Dietterich (2019), "Benchmarking
Neural Network Robustness to Common Corruptions and Perturbations", ICLR (their ``make_cifar_c.py``).

Each function takes a batch ``(N, H, W, C)`` of float64 images in [0, 1], a severity 1..5 and one
generator per image, and returns the corrupted batch (not yet clipped or quantized)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from robustbench_cnn.corruptions.kernels import clipped_zoom, disk, gaussian, motion_blur_image

GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)  # standard deviation
SHOT_NOISE = (500, 250, 100, 75, 50)  # photons at full intensity (Poisson rate)
IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)  # share of salt-and-pepper values
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))  # disk radius, anti-alias sigma
GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma, max shift, passes
MOTION_BLUR = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))  # length (pixels), sigma; angle U(-45, 45) degrees
ZOOM_BLUR = (1.06, 1.11, 1.16, 1.21, 1.26)  # zoom factors 1, 1.01, ... below this bound, averaged


def _stack(rngs: list[np.random.Generator], draw) -> np.ndarray:
    return np.stack([draw(rng) for rng in rngs])


def gaussian_noise(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """x + N(0, c^2), per pixel and channel."""
    c = GAUSSIAN_NOISE[severity - 1]
    return x + _stack(rngs, lambda rng: rng.normal(0.0, c, x.shape[1:]))


def shot_noise(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """Poisson(x * c) / c: photon noise at ``c`` photons for a white pixel."""
    c = SHOT_NOISE[severity - 1]
    return np.stack([rng.poisson(img * c) / c for img, rng in zip(x, rngs, strict=True)])


def impulse_noise(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """Salt and pepper: a share ``c`` of the values (per pixel and channel) set to 0 or 1, evenly."""
    c = IMPULSE_NOISE[severity - 1]
    hit = _stack(rngs, lambda rng: rng.random((2, *x.shape[1:])))
    return np.where(hit[:, 0] < c, (hit[:, 1] < 0.5).astype(x.dtype), x)


def defocus_blur(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """Correlation with an anti-aliased disk, edges mirrored."""
    radius, alias = DEFOCUS_BLUR[severity - 1]
    kernel = disk(radius, alias)
    return ndimage.correlate(x, kernel[None, :, :, None], mode="mirror")


def glass_blur(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """Gaussian blur, quantized to 8 bits, then each interior pixel swapped with a neighbour up to
    ``max shift`` up or left (bottom-right first), ``passes`` times, then blurred again."""
    sigma, delta, passes = GLASS_BLUR[severity - 1]
    n, h, w, _ = x.shape
    out = np.floor(gaussian(x, sigma) * 255) / 255
    rows, cols = range(h - delta, delta, -1), range(w - delta, delta, -1)
    shifts = _stack(rngs, lambda rng: rng.integers(-delta, delta, (passes, len(rows), len(cols), 2)))
    idx = np.arange(n)
    for p in range(passes):
        for i, r in enumerate(rows):
            for j, col in enumerate(cols):
                dx, dy = shifts[:, p, i, j, 0], shifts[:, p, i, j, 1]
                here = out[idx, r, col].copy()
                out[idx, r, col] = out[idx, r + dy, col + dx]
                out[idx, r + dy, col + dx] = here
    return gaussian(out, sigma)


def motion_blur(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """A one-sided motion blur of ``length`` pixels at a uniform random angle in [-45, 45) degrees."""
    radius, sigma = MOTION_BLUR[severity - 1]
    angles = [rng.uniform(-45, 45) for rng in rngs]
    return np.stack([motion_blur_image(img, radius, sigma, a) for img, a in zip(x, angles, strict=True)])


def zoom_blur(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """The mean of the image and its zooms about the centre by 1.00, 1.01, ... up to the bound."""
    factors = np.arange(1, ZOOM_BLUR[severity - 1], 0.01)
    acc = x.copy()
    for factor in factors:  # the whole batch at once: the zoom is the same for every image
        acc += clipped_zoom(x, float(factor))
    return acc / (len(factors) + 1)
