"""Weather and digital corruptions with the CIFAR-10-C constants of Hendrycks & Dietterich (2019)
(their ``make_cifar_c.py``). Frost is left out: it blends in six photographs of frost that are not
ours to ship, and a synthetic frost would not be the same corruption.

Same contract as :mod:`.noise_blur`: ``(N, H, W, C)`` float64 in [0, 1], a severity 1..5, one generator
per image; the result is not yet clipped or quantized."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from robustbench_cnn.corruptions.kernels import (
    affine_from_points,
    clipped_zoom,
    gaussian,
    gray,
    motion_blur_image,
    plasma_fractal,
)

# mean, std, zoom, threshold, blur length, blur sigma, blend with the brightened image
SNOW = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))  # fmt: skip
FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))  # fog strength, fractal decay
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to V in HSV
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # scale about the per-channel mean
ELASTIC = ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))  # x size:
# displacement scale, displacement smoothing sigma, affine jitter (all as fractions of a 32-pixel side)
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)  # box-downsampled to this share of the side, then back up
JPEG_QUALITY = (80, 65, 58, 50, 40)


def snow(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """Snowflakes (thresholded, zoomed Gaussian noise, motion-blurred at an angle in [-135, -45) degrees,
    added twice: as is and rotated 180 degrees) over the image brightened towards white."""
    mean, std, zoom, threshold, length, sigma, blend = SNOW[severity - 1]
    n, h, w, _ = x.shape
    out = []
    for img, rng in zip(x, rngs, strict=True):
        layer = clipped_zoom(rng.normal(mean, std, (h, w))[..., None], zoom)
        layer[layer < threshold] = 0
        layer = np.rint(np.clip(layer, 0, 1) * 255) / 255  # the 8-bit layer the original blurs
        layer = np.rint(motion_blur_image(layer, length, sigma, rng.uniform(-135, -45)) * 255) / 255
        bright = blend * img + (1 - blend) * np.maximum(img, gray(img)[..., None] * 1.5 + 0.5)
        out.append(bright + layer + np.rot90(layer, k=2))
    return np.stack(out)


def fog(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """A plasma fractal added with strength ``c``, the result rescaled by max / (max + c)."""
    strength, decay = FOG[severity - 1]
    n, h, w, _ = x.shape
    size = max(32, 1 << (max(h, w) - 1).bit_length())
    out = []
    for img, rng in zip(x, rngs, strict=True):
        peak = img.max()
        fogged = img + strength * plasma_fractal(size, decay, rng)[:h, :w, None]
        out.append(fogged * peak / (peak + strength))
    return np.stack(out)


def brightness(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """V += c in HSV (clipped to 1), hue and saturation kept: with V = max over channels, every channel
    scales by V'/V (a black pixel becomes grey V')."""
    c = BRIGHTNESS[severity - 1]
    v = x.max(axis=-1, keepdims=True)
    lifted = np.clip(v + c, 0, 1)
    return np.where(v > 0, x * lifted / np.where(v > 0, v, 1), lifted)


def contrast(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """(x - mean) * c + mean, the mean per image and channel."""
    c = CONTRAST[severity - 1]
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * c + means


def elastic_transform(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """A random affine map (three points jittered, edges mirrored), then a smooth random displacement
    field (bilinear, edges reflected); sizes scale with the image side as on 32 pixels."""
    n, h, w, ch = x.shape
    alpha, sigma, jitter = (v * min(h, w) for v in ELASTIC[severity - 1])
    centre, third = np.array([h // 2, w // 2], dtype=np.float64), min(h, w) // 3
    src = np.array([centre + third, [centre[0] + third, centre[1] - third], centre - third])
    rr, cc, zz = np.meshgrid(np.arange(h), np.arange(w), np.arange(ch), indexing="ij")
    out = []
    for img, rng in zip(x, rngs, strict=True):
        inverse = np.linalg.inv(np.vstack([affine_from_points(src, src + rng.uniform(-jitter, jitter, (3, 2))),
                                           [0, 0, 1]]))  # fmt: skip
        matrix = np.array([[inverse[1, 1], inverse[1, 0], 0], [inverse[0, 1], inverse[0, 0], 0], [0, 0, 1]])
        warped = ndimage.affine_transform(img, matrix, offset=(inverse[1, 2], inverse[0, 2], 0), order=1,
                                          mode="mirror")  # fmt: skip
        dx, dy = (gaussian(rng.uniform(-1, 1, (h, w)), sigma, mode="reflect", truncate=3) * alpha for _ in range(2))
        coords = [rr + dy[..., None], cc + dx[..., None], zz]
        out.append(ndimage.map_coordinates(warped, coords, order=1, mode="reflect"))
    return np.stack(out)


def _pil(img: np.ndarray) -> Image.Image:
    data = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(data[..., 0], "L") if data.shape[-1] == 1 else Image.fromarray(data, "RGB")


def _array(image: Image.Image, channels: int) -> np.ndarray:
    data = np.asarray(image, dtype=np.float64) / 255
    return data[..., None] if channels == 1 else data


def pixelate(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """Box-downsampled to ``c`` of each side, then box-upsampled back (8-bit, as a camera would)."""
    c = PIXELATE[severity - 1]
    n, h, w, ch = x.shape
    small = (int(w * c), int(h * c))
    return np.stack([_array(_pil(img).resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BOX), ch)
                     for img in x])  # fmt: skip


def jpeg_compression(x: np.ndarray, severity: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """Saved as JPEG at quality ``c`` (Pillow's libjpeg-turbo) and decoded."""
    quality = JPEG_QUALITY[severity - 1]
    out = []
    for img in x:
        buffer = io.BytesIO()
        _pil(img).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(_array(decoded.convert("L" if x.shape[-1] == 1 else "RGB"), x.shape[-1]))
    return np.stack(out)
