"""Pillow's separable resampling of uint8 images, reproduced exactly on batched tensors.

torch's uint8 antialiased kernels follow Pillow's algorithm but keep 16-bit filter weights where Pillow
keeps 22 bits, so bicubic results differ by a grey level or two on some pixels: after ImageNet
normalisation that is up to 0.035, above the 0.02 this project promises against the Hugging Face
processors. This module computes what Pillow's `Resample.c` computes, step for step:

- per output pixel, the filter's taps over the input window (`precompute_coeffs`), normalised to sum
  to one, then rounded to integers with `PRECISION_BITS` fractional bits (`normalize_coeffs_8bpc`);
- each pass sums uint8 values times those integers in exact integer arithmetic, adds one half, shifts
  and clips to uint8 (`clip8`); the intermediate image between the passes is uint8, as in Pillow.

The pass order (`pil_resizes_height_first`) is the caller's: it is the same rule for every kernel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images


def _bicubic(x: float) -> float:
    """Pillow's bicubic filter (Keys, a = -0.5)."""
    a, x = -0.5, abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _bilinear(x: float) -> float:
    """Pillow's triangle filter."""
    return max(0.0, 1.0 - abs(x))


FILTERS: dict[str, tuple[Callable[[float], float], float]] = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


@functools.lru_cache(maxsize=64)
def pass_weights(in_size: int, out_size: int, resample: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, weights), each int64 (out_size, taps): the input positions and integer weights of each output.

    Taps past a window's end point at its last position with weight zero, so every row has `taps` entries.
    """
    kernel, support = FILTERS[resample]
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    inverse_filter_scale = 1.0 / filter_scale  # Pillow multiplies by it (dividing can differ in the last bit)
    support *= filter_scale
    taps = math.ceil(support) * 2 + 1
    indices = torch.zeros(out_size, taps, dtype=torch.int64)
    weights = torch.zeros(out_size, taps, dtype=torch.int64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        taps_here = [kernel((x - center + 0.5) * inverse_filter_scale) for x in range(first, last)]
        total = sum(taps_here)
        normalised = [w / total if total != 0.0 else w for w in taps_here]
        weights[out, : len(normalised)] = torch.tensor([_fixed_point(w) for w in normalised], dtype=torch.int64)
        indices[out] = torch.tensor([min(x, last - 1) for x in range(first, first + taps)], dtype=torch.int64)
    return indices, weights


def _fixed_point(weight: float) -> int:
    """Pillow's rounding of a normalised weight to PRECISION_BITS fractional bits (half away from zero)."""
    scaled = weight * (1 << PRECISION_BITS)
    return int(scaled - 0.5) if weight < 0 else int(scaled + 0.5)


@functools.lru_cache(maxsize=64)
def pass_matrix(in_size: int, out_size: int, resample: str) -> torch.Tensor:
    """float64 (in_size, out_size): `pass_weights` as a dense matrix (integers, so products and sums are exact)."""
    indices, weights = pass_weights(in_size, out_size, resample)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    matrix.scatter_add_(1, indices, weights.to(torch.float64))
    return matrix.T.contiguous()


def _round_to_uint8(total: torch.Tensor) -> torch.Tensor:
    """Pillow's `clip8` of float64 integer sums: add one half, shift right by PRECISION_BITS, clip to uint8.

    In place; the power-of-two scale is exact, and the cast truncates, which is the floor once clipped at 0.
    """
    total.add_(1 << (PRECISION_BITS - 1)).mul_(2.0**-PRECISION_BITS).clamp_(0, 255)
    return total.to(torch.uint8)


def resize(pixels: torch.Tensor, size: tuple[int, int], resample: str, height_first: bool) -> torch.Tensor:
    """uint8 (B, C, H, W) -> uint8 (B, C, *size), bit for bit as Pillow's `Image.resize` (no reducing gap).

    Each pass is an exact float64 matmul with the integer weights (sums stay below 2**53), rounded to
    uint8 as Pillow rounds. An axis that keeps its size is not resampled, as in Pillow.
    """
    def horizontal(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == size[1]:
            return x
        return _round_to_uint8(x.to(torch.float64) @ pass_matrix(x.shape[-1], size[1], resample))  # (B, C, h, w)

    def vertical(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] == size[0]:
            return x
        return _round_to_uint8(pass_matrix(x.shape[-2], size[0], resample).T @ x.to(torch.float64))  # (B, C, h, w)

    return horizontal(vertical(pixels)) if height_first else vertical(horizontal(pixels))
