"""Colour jitter on uint8 batches (B, 3, H, W): torchvision's `ColorJitter`, drawn per image.

torchvision `torchvision/transforms/transforms.py`, `ColorJitter.get_params` / `forward`: a random
order of the four adjustments, factors uniform in [max(0, 1 - brightness), 1 + brightness] (same for
contrast and saturation) and [-hue, hue]; an adjustment with strength 0 is skipped. The adjustments
are torchvision's PIL path (`functional_pil.adjust_*`), i.e. `ImageEnhance.Brightness / Contrast /
Color` and a hue shift in Pillow's HSV, all from `image_ops`.
"""

from __future__ import annotations

import torch

from . import image_ops
from .config import ColorJitterConfig

ADJUSTMENTS = (image_ops.adjust_brightness, image_ops.adjust_contrast, image_ops.adjust_saturation,
               image_ops.adjust_hue)


def color_jitter(images: torch.Tensor, cfg: ColorJitterConfig) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, H, W): each image's adjustments in its own random order."""
    count = len(images)
    order = torch.argsort(torch.rand(count, len(ADJUSTMENTS)), dim=1)  # (B, 4): a random permutation per image
    factors = jitter_factors(cfg, count)  # (4, B)
    strengths = (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    for position in range(len(ADJUSTMENTS)):
        for which, adjust in enumerate(ADJUSTMENTS):
            rows = (order[:, position] == which).nonzero().flatten()
            if strengths[which] > 0 and len(rows):
                images = images.index_copy(0, rows, adjust(images[rows], factors[which, rows]))
    return images


def jitter_factors(cfg: ColorJitterConfig, count: int) -> torch.Tensor:
    """float64 (4, B): brightness, contrast, saturation factors and hue shifts, uniform in their ranges."""
    ranges = [(max(0.0, 1.0 - value), 1.0 + value) for value in (cfg.brightness, cfg.contrast, cfg.saturation)]
    ranges.append((-cfg.hue, cfg.hue))
    low, high = torch.tensor(ranges, dtype=torch.float64).unbind(1)  # (4,) each
    return low[:, None] + (high - low)[:, None] * torch.rand(len(ranges), count, dtype=torch.float64)
