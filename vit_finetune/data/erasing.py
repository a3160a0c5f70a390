"""Random erasing on a normalised float batch (B, C, H, W), as timm's `RandomErasing`, drawn per image.

timm `timm/data/random_erasing.py`, `RandomErasing._erase`: with probability p an image gets 1 to
`max_count` boxes; each box takes up to 10 tries to draw an area fraction in `scale` (divided by the
box count) and an aspect ratio log-uniform in `ratio`, keeps the first that fits (h < H, w < W) at a
uniform position, and is filled with zeros ("const"), one normal draw per channel ("rand") or per
pixel ("pixel"). The values are N(0, 1) in normalised space, so erasing runs after normalisation:
on the collated training batch, never on evaluation batches (the collator is shared with them).
"""

from __future__ import annotations

import math

import torch

from .augment import one_thread
from .config import RandomErasingConfig

TRIES = 10


def random_erasing(pixel_values: torch.Tensor, cfg: RandomErasingConfig,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """float (B, C, H, W) -> the same tensor with random boxes overwritten (in place, also returned).

    Draws come from `generator` (a CPU generator) or torch's global CPU RNG, whatever device the batch
    is on, so a seed gives the same boxes on a CPU and a GPU. The boxes are drawn for the whole batch at once; filling them is a slice assignment per box. Small
    ops, so on one thread (see `augment.one_thread`).
    """
    with one_thread():
        return _erase(pixel_values, cfg, generator)


def _erase(pixel_values: torch.Tensor, cfg: RandomErasingConfig, generator: torch.Generator | None) -> torch.Tensor:
    count, channels, height, width = pixel_values.shape
    if cfg.p <= 0 or count == 0:
        return pixel_values
    draw = _Draws(generator)
    erased = (draw.uniform(count) < cfg.p).nonzero().flatten()  # the images that get boxes
    boxes = torch.randint(1, cfg.max_count + 1, (len(erased),), generator=generator)
    for box in range(cfg.max_count):
        rows = erased[box < boxes]
        if len(rows):
            placed = _draw_boxes(draw, boxes[box < boxes], height, width, cfg)  # (n, 4)
            _fill_boxes(pixel_values, rows.tolist(), placed.tolist(), cfg.mode, draw)
    return pixel_values


def _fill_boxes(pixel_values: torch.Tensor, rows: list[int], boxes: list[list[int]], mode: str, draw: "_Draws") -> None:
    channels = pixel_values.shape[1]
    for row, (top, left, box_h, box_w) in zip(rows, boxes):
        if box_h:  # 0: no try fitted
            target = pixel_values[row, :, top : top + box_h, left : left + box_w]
            target.copy_(_fill_values(mode, (channels, box_h, box_w), draw, target))


class _Draws:
    """Uniform and normal CPU draws from one generator (or torch's global RNG)."""

    def __init__(self, generator: torch.Generator | None):
        self.generator = generator

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, dtype=torch.float64)

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator)


def _draw_boxes(draw: _Draws, boxes: torch.Tensor, height: int, width: int, cfg: RandomErasingConfig) -> torch.Tensor:
    """int64 (n, 4) = (top, left, h, w) per image: the first of TRIES draws that fits; h = w = 0 if none fits."""
    count = len(boxes)
    area = (cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * draw.uniform(count, TRIES)) * (height * width)
    area = area / boxes.to(area)[:, None]  # timm divides the area among the image's boxes
    log_low, log_high = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * draw.uniform(count, TRIES))
    box_h, box_w = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))  # (n, TRIES)
    fits = (box_w < width) & (box_h < height)
    first = fits.to(torch.int8).argmax(1, keepdim=True)  # index of the first fitting try
    box_h = torch.where(fits.any(1), box_h.gather(1, first)[:, 0], 0)
    box_w = torch.where(fits.any(1), box_w.gather(1, first)[:, 0], 0)
    top = torch.floor(draw.uniform(count) * (height - box_h + 1))  # timm's randint(0, H - h), inclusive
    left = torch.floor(draw.uniform(count) * (width - box_w + 1))
    return torch.stack([top, left, box_h, box_w], 1).long()


def _fill_values(mode: str, shape: tuple[int, int, int], draw: _Draws, like: torch.Tensor) -> torch.Tensor:
    """What a box becomes: zeros ("const"), one normal colour ("rand") or a normal value each ("pixel")."""
    if mode == "const":
        return like.new_zeros(())
    values = draw.normal(shape[0], 1, 1) if mode == "rand" else draw.normal(*shape)
    return values.to(device=like.device, dtype=like.dtype)
