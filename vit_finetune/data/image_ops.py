"""Batched uint8 image operations with Pillow's definitions: the ops timm's and torchvision's PIL paths call.

Every op maps uint8 (n, 3, H, W) to uint8 (n, 3, H, W) with one argument per image ((n,) tensors),
so a batch is transformed in a few tensor ops instead of n PIL calls. Each op reproduces Pillow's
arithmetic, rounding included, bit for bit except bilinear resampling (tests compare against Pillow):

- point ops (`ImageOps.autocontrast / equalize / posterize / solarize / invert`, timm's
  `solarize_add`) become per-image, per-channel lookup tables of shape (n, 3, 256), applied with one
  gather (`apply_lut`);
- `ImageEnhance.Brightness / Color / Contrast / Sharpness` blend the image with a "degenerate" image
  (black, its grey version, its mean grey, its SMOOTH-filtered version) in float32 and truncate, as
  `Image.blend` does;
- `Image.transform(AFFINE)` (rotate, shear, translate) samples each output pixel centre mapped through
  the inverse 2x3 matrix, nearest (exact) or bilinear (one float32 `grid_sample`, within one grey
  level of Pillow's float64 arithmetic), with a fill colour outside;
- hue shifts go through Pillow's 8-bit HSV conversion.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

Fill = int | tuple[int, int, int]


# ---- point ops: lookup tables --------------------------------------------------------------


def apply_lut(images: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 3, H, W) through per-image, per-channel tables uint8 (n, 3, 256) (`Image.point`)."""
    n, channels, height, width = images.shape
    flat = images.reshape(n, channels, height * width).long()  # (n, 3, H*W)
    return lut.gather(2, flat).view(n, channels, height, width)


_VALUES = np.arange(256)


def _per_channel(table: np.ndarray) -> torch.Tensor:
    """uint8 (n, 256) -> the same table for all three channels, uint8 (n, 3, 256)."""
    return torch.from_numpy(np.repeat(table.astype(np.uint8)[:, None, :], 3, axis=1))


def identity_lut(n: int) -> torch.Tensor:
    """uint8 (n, 3, 256): every value maps to itself."""
    return _per_channel(np.tile(_VALUES, (n, 1)))


def invert_lut(n: int) -> torch.Tensor:
    """`ImageOps.invert`: v -> 255 - v."""
    return _per_channel(np.tile(255 - _VALUES, (n, 1)))


def posterize_lut(bits: torch.Tensor) -> torch.Tensor:
    """`ImageOps.posterize(image, bits)`: keep the `bits` (n,) high bits; 0 bits gives black.

    Pillow >= 10 refuses 0 bits; its mask formula `~(2 ** (8 - bits) - 1)` (and older Pillow) gives 0.
    """
    mask = ~(2 ** (8 - np.asarray(bits, dtype=np.int64)) - 1) & 255  # (n,)
    return _per_channel(_VALUES & mask[:, None])


def solarize_lut(threshold: torch.Tensor) -> torch.Tensor:
    """`ImageOps.solarize(image, threshold)`: values >= threshold (n,) are inverted."""
    inverted = _VALUES >= np.asarray(threshold, dtype=np.float64)[:, None]  # (n, 256)
    return _per_channel(np.where(inverted, 255 - _VALUES, _VALUES))


def solarize_add_lut(add: torch.Tensor, threshold: int = 128) -> torch.Tensor:
    """timm's `solarize_add`: values below `threshold` get `add` (n,) added, capped at 255."""
    shifted = np.minimum(_VALUES + np.asarray(add, dtype=np.int64)[:, None], 255)  # (n, 256)
    return _per_channel(np.where(_VALUES < threshold, shifted, _VALUES))


def channel_histograms(images: torch.Tensor) -> torch.Tensor:
    """int64 (n, 3, 256): how often each value occurs in each channel of each image."""
    n, channels = images.shape[:2]
    offsets = torch.arange(n * channels).view(n, channels, 1, 1) * 256
    counts = torch.bincount((images.long() + offsets).flatten(), minlength=n * channels * 256)
    return counts.view(n, channels, 256)


def autocontrast_lut(images: torch.Tensor) -> torch.Tensor:
    """`ImageOps.autocontrast(image)` (no cutoff): stretch each channel's [lo, hi] to [0, 255].

    Pillow: scale = 255 / (hi - lo), v -> int(v * scale - lo * scale) clipped; identity when hi <= lo.
    """
    lo = images.amin(dim=(2, 3)).double()[..., None]  # (n, 3, 1)
    hi = images.amax(dim=(2, 3)).double()[..., None]
    values = torch.arange(256, dtype=torch.float64)
    scale = torch.full_like(lo, 255.0) / (hi - lo).clamp(min=1)  # `255.0 / tensor` would multiply by a reciprocal
    stretched = (values * scale + (-lo * scale)).trunc().clamp(0, 255)
    return torch.where(hi > lo, stretched, values).to(torch.uint8)


def equalize_lut(images: torch.Tensor) -> torch.Tensor:
    """`ImageOps.equalize(image)`: per channel, step = (pixels - count of the top used value) // 255,
    v -> (step // 2 + pixels below v) // step; identity when one value or step == 0. Table values
    above 255 (the top used value) are clipped to 255 by `Image.point`, as here.
    """
    counts = channel_histograms(images)  # (n, 3, 256)
    values = torch.arange(256)
    top_used = torch.where(counts > 0, values, -1).amax(-1, keepdim=True)  # (n, 3, 1)
    top_count = counts.gather(-1, top_used)
    step = (counts.sum(-1, keepdim=True) - top_count) // 255
    below = counts.cumsum(-1) - counts  # pixels with a smaller value
    equalized = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    return torch.where(step > 0, equalized, values).to(torch.uint8)


# ---- blends: ImageEnhance ------------------------------------------------------------------


def blend(degenerate: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`Image.blend(degenerate, images, factor)`: float32 `d + f * (i - d)`, clipped, truncated to uint8.

    degenerate broadcasts against images (n, 3, H, W); factor (n,).
    """
    alpha = factor.to(torch.float32).view(-1, 1, 1, 1)
    low = degenerate.to(torch.float32)
    mixed = low + alpha * (images.to(torch.float32) - low)
    return mixed.clamp_(0, 255).to(torch.uint8)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 1, H, W): Pillow's RGB -> "L", (19595 R + 38470 G + 7471 B + 2**15) >> 16."""
    weights = torch.tensor([19595, 38470, 7471]).view(1, 3, 1, 1)
    return ((images.long() * weights).sum(1, keepdim=True) + 32768).bitwise_right_shift(16).to(torch.uint8)


def black(images: torch.Tensor) -> torch.Tensor:
    """`ImageEnhance.Brightness`'s degenerate image: black, (n, 1, 1, 1)."""
    return images.new_zeros(len(images), 1, 1, 1)


def grey_mean(images: torch.Tensor) -> torch.Tensor:
    """`ImageEnhance.Contrast`'s degenerate image: the mean grey int(mean(L) + 0.5), float64 (n, 1, 1, 1)."""
    return (grayscale(images).to(torch.float64).mean(dim=(1, 2, 3), keepdim=True) + 0.5).floor()


def smooth(images: torch.Tensor) -> torch.Tensor:
    """`image.filter(ImageFilter.SMOOTH)`: 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13, rounded, border kept.

    Sums in float32 in Pillow's order (0.5, then the row below, the row, the row above), then truncates.
    """
    side, centre = torch.tensor(1 / 13, dtype=torch.float32), torch.tensor(5 / 13, dtype=torch.float32)
    pixels = images.to(torch.float32)
    rows = []
    for row, weight in ((pixels[:, :, 2:], side), (pixels[:, :, 1:-1], centre), (pixels[:, :, :-2], side)):
        rows.append(row[..., :-2] * side + row[..., 1:-1] * weight + row[..., 2:] * side)  # (n, 3, H-2, W-2)
    total = ((torch.tensor(0.5) + rows[0]) + rows[1]) + rows[2]
    out = images.clone()
    out[:, :, 1:-1, 1:-1] = total.clamp_(0, 255).to(torch.uint8)
    return out


DEGENERATE = {"Brightness": black, "Color": grayscale, "Contrast": grey_mean, "Sharpness": smooth}  # ImageEnhance's


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`ImageEnhance.Brightness(image).enhance(factor)`: blend with black."""
    return blend(black(images), images, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`ImageEnhance.Color(image).enhance(factor)`: blend with the image's grey ("L") version."""
    return blend(grayscale(images), images, factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`ImageEnhance.Contrast(image).enhance(factor)`: blend with the mean grey."""
    return blend(grey_mean(images), images, factor)


def adjust_sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`ImageEnhance.Sharpness(image).enhance(factor)`: blend with the SMOOTH-filtered image."""
    return blend(smooth(images), images, factor)


# ---- hue: Pillow's 8-bit HSV ---------------------------------------------------------------


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 3, H, W) RGB -> uint8 HSV as `image.convert("HSV")` computes it (Pillow's `rgb2hsv_row`).

    Pillow mixes float32 variables with double constants; each step below keeps its precision.
    """
    rgb = images.to(torch.float32)
    r, g, b = rgb.unbind(1)
    maxc, minc = rgb.amax(1), rgb.amin(1)
    span = (maxc - minc).clamp(min=1)
    rc, gc, bc = ((maxc - r) / span).double(), ((maxc - g) / span).double(), ((maxc - b) / span).double()
    hue = torch.where(r == maxc, bc - gc, torch.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc)).float()
    hue = torch.remainder(hue.double() / 6.0 + 1.0, 1.0).float()
    sat = span / maxc.clamp(min=1)
    grey = maxc == minc
    h = torch.where(grey, 0, (hue.double() * 255.0).trunc().clamp(0, 255))
    s = torch.where(grey, 0, (sat.double() * 255.0).trunc().clamp(0, 255))
    return torch.stack([h.to(torch.uint8), s.to(torch.uint8), maxc.to(torch.uint8)], 1)


# Pillow's hsv2rgb: per hue sector, which of (v, p, q, t) become r, g and b.
_SECTOR_SOURCES = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 3, H, W) HSV -> uint8 RGB as `image.convert("RGB")` computes it (Pillow's `hsv2rgb`)."""
    h, s, v = hsv.double().unbind(1)  # (n, H, W) each
    sector = torch.floor(h * 6.0 / 255.0)
    f = (h * 6.0 / 255.0 - sector).float()
    fs = (s / 255.0).float()
    p = _round_half_up(v * (1.0 - fs.double()))
    q = _round_half_up(v * (1.0 - (fs * f).double()))
    t = _round_half_up(v * (1.0 - fs.double() * (1.0 - f.double())))
    planes = torch.stack([v, p, q, t]).clamp_(0, 255).to(torch.uint8)  # (4, n, H, W)
    sources = _SECTOR_SOURCES[sector.long() % 6].permute(3, 0, 1, 2)  # (3, n, H, W): plane index per channel
    rgb = planes.gather(0, sources).transpose(0, 1)  # (n, 3, H, W)
    return torch.where((s == 0)[:, None], hsv[:, 2:3], rgb)


def _round_half_up(values: torch.Tensor) -> torch.Tensor:
    """C's `round` for values >= 0 (halves away from zero; torch.round rounds halves to even)."""
    floor = values.floor()
    return floor + (values - floor >= 0.5)


def adjust_hue(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's PIL `adjust_hue`: add uint8(factor * 255) (wrapping) to Pillow's 8-bit hue; factor in [-0.5, 0.5]."""
    hsv = rgb_to_hsv(images)
    shift = (factor.double() * 255).trunc().long().remainder(256)  # numpy's float -> uint8 cast wraps
    hue = (hsv[:, 0].long() + shift.view(-1, 1, 1)).remainder(256)
    return hsv_to_rgb(torch.cat([hue[:, None].to(torch.uint8), hsv[:, 1:]], 1))


# ---- geometry: Image.transform(AFFINE) -----------------------------------------------------


def rotate_matrix(degrees: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """float64 (n, 2, 3): `Image.rotate(degrees)`'s AFFINE data (counter-clockwise about (W/2, H/2)).

    Computed in Python floats exactly as `Image.rotate` does (cos/sin rounded to 15 decimals).
    """
    rows = [_rotate_data(angle, height, width) for angle in np.asarray(degrees, dtype=np.float64).tolist()]
    return torch.tensor(rows, dtype=torch.float64).view(-1, 2, 3)


def _rotate_data(degrees: float, height: int, width: int) -> list[float]:
    angle = -math.radians(degrees % 360.0)
    cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
    cx, cy = width / 2, height / 2
    return [cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy]


def shear_matrix(factor: torch.Tensor, axis: str) -> torch.Tensor:
    """float64 (n, 2, 3): the AFFINE data (1, f, 0, 0, 1, 0) for x, (1, 0, 0, f, 1, 0) for y."""
    return _unit_matrix(factor, (0, 1) if axis == "x" else (1, 0))


def translate_matrix(pixels: torch.Tensor, axis: str) -> torch.Tensor:
    """float64 (n, 2, 3): the AFFINE data (1, 0, p, 0, 1, 0) for x, (1, 0, 0, 0, 1, p) for y.

    The output shows the input moved by -p pixels (the data maps output to input coordinates).
    """
    return _unit_matrix(pixels, (0, 2) if axis == "x" else (1, 2))


def identity_matrix(n: int) -> torch.Tensor:
    """float64 (n, 2, 3): the AFFINE data that leaves an image unchanged."""
    return _unit_matrix(np.zeros(n), (0, 2))


def _unit_matrix(values, entry: tuple[int, int]) -> torch.Tensor:
    """The identity AFFINE data with `entry` set to `values` (n,)."""
    values = np.asarray(values, dtype=np.float64)
    matrix = np.zeros((len(values), 2, 3))
    matrix[:, 0, 0] = matrix[:, 1, 1] = 1.0
    matrix[:, entry[0], entry[1]] = values
    return torch.from_numpy(matrix)


def affine(images: torch.Tensor, matrix: torch.Tensor, interpolation: str = "bilinear", fill: Fill = 0) -> torch.Tensor:
    """`Image.transform(size, Image.AFFINE, data, resample, fillcolor=fill)` for each image.

    matrix: float64 (n, 2, 3), each row of Pillow's AFFINE data (a, b, c, d, e, f): output pixel
    (x, y) reads the input at (a*(x+.5) + b*(y+.5) + c, d*(x+.5) + e*(y+.5) + f). Points outside
    [0, W) x [0, H) get `fill`.

    "nearest" is exact: the pixel containing the point, found as Pillow finds it (`_nearest_source`).
    "bilinear" is Pillow's `bilinear_filter32RGB` (edge pixels repeated, result truncated) computed by
    one float32 `grid_sample`: Pillow interpolates in float64, so where the exact result is (close
    to) a whole number the two can truncate to neighbouring grey levels. Measured on CIFAR images:
    at most 1 grey level, on ~0.1 % of the pixels of a rotation and a few % of a fractional shift.
    """
    n, channels, height, width = images.shape
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    ys = torch.arange(height, dtype=torch.float64)[:, None] + 0.5
    a, b, c, d, e, f = matrix.reshape(n, 6, 1, 1).unbind(1)  # (n, 1, 1) each
    x_in = a * xs + b * ys + c  # (n, H, W), in Pillow's order of operations
    y_in = d * xs + e * ys + f
    if interpolation == "nearest":
        x_in, y_in = _nearest_source(matrix, x_in, y_in)
        out = _gather(images, x_in.clamp(0, width - 1), y_in.clamp(0, height - 1))
    elif interpolation == "bilinear":
        grid = torch.stack([x_in * (2 / width) - 1, y_in * (2 / height) - 1], -1).to(torch.float32)  # (n, H, W, 2)
        out = F.grid_sample(images.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = out.add_(_TRUNCATION_SLACK).floor_().to(torch.uint8)
    else:
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    inside = (x_in >= 0) & (x_in < width) & (y_in >= 0) & (y_in < height)
    return torch.where(inside[:, None], out, torch.tensor(fill, dtype=torch.uint8).view(1, -1, 1, 1))


_TRUNCATION_SLACK = 1e-3  # float32 results of whole-number interpolations land within this below the number


def _nearest_source(matrix: torch.Tensor, x_in: torch.Tensor, y_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 (n, H, W) x and y of the pixels Pillow's nearest AFFINE reads: the floor of the float
    coordinates for pure scale / translation (`ImagingScaleAffine`), else its 16.16 fixed-point walk
    (`affine_fixed`).
    """
    n, height, width = x_in.shape
    a, b, c, d, e, f = matrix.reshape(n, 6, 1, 1).unbind(1)
    fixed = [torch.floor(v * 65536.0 + 0.5).long() for v in (a, b, c + a * 0.5 + b * 0.5, d, e, f + d * 0.5 + e * 0.5)]
    xs, ys = torch.arange(width), torch.arange(height)[:, None]
    x_fixed = (fixed[2] + ys * fixed[1] + xs * fixed[0]).bitwise_right_shift(16)  # (n, H, W)
    y_fixed = (fixed[5] + ys * fixed[4] + xs * fixed[3]).bitwise_right_shift(16)
    scaling = (b == 0) & (d == 0)
    return torch.where(scaling, x_in.floor().long(), x_fixed), torch.where(scaling, y_in.floor().long(), y_fixed)


def _gather(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 3, H', W'): images[i, :, y[i], x[i]] for integer maps x, y (n, H', W')."""
    n, channels, height, width = images.shape
    index = (y * width + x).view(n, 1, -1).expand(n, channels, -1)  # (n, 3, H'*W')
    return images.reshape(n, channels, height * width).gather(2, index).view(n, channels, *x.shape[1:])
