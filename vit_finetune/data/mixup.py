"""Mixup / CutMix of a collated batch with soft targets (trained with `training/losses.py`).

timm `timm/data/mixup.py`, `Mixup` (`_params_per_batch`, `_params_per_elem`, `_mix_batch`,
`_mix_pair`, `_mix_elem`, `rand_bbox`, `cutmix_bbox_and_lam`, `mixup_target`):

- image i is mixed with image B-1-i (the batch flipped); with probability `mixup_prob` a mix happens,
  CutMix with probability `mixup_switch_prob` when both alphas are set (else whichever is set);
  lam ~ Beta(alpha, alpha);
- mixup: lam * x + (1 - lam) * partner (one `lerp`, equal to timm's expression within float rounding); CutMix: a box of side sqrt(1 - lam) * (H, W) around a uniform
  centre, clipped to the image, is copied from the partner and lam is corrected to the unpasted area;
- `mixup_mode`: "batch" draws once for the batch, "pair" once per pair (i, B-1-i), "elem" per image;
- targets: label-smoothed one-hots (on = 1 - s + s/K, off = s/K) mixed with the same lam.

It runs where the batch is, after collate (the Trainer's `compute_loss`), on training batches only.
The draws come from numpy's generator seeded by one draw of torch's CPU RNG (global, or `generator`,
a CPU generator): torch's Beta sampler takes no generator. The batch may be on any device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import AugmentConfig


def mix_batch(pixel_values: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: AugmentConfig,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """float (B, C, H, W), int64 labels (B,) -> (mixed pixels (B, C, H, W), soft targets float32 (B, K)).

    The inputs are left unchanged. Without mixup_alpha / cutmix_alpha the pixels come back as they
    are and the targets are the label-smoothed one-hots.
    """
    count, height, width = len(labels), *pixel_values.shape[-2:]
    rng = np.random.default_rng(int(torch.randint(2**63 - 1, (1,), generator=generator)))
    lam, use_cutmix = _draw_lambdas(_draw_units(count, cfg.mixup_mode), cfg, rng)
    boxes = _draw_boxes(lam, height, width, rng)
    lam = np.where(use_cutmix, 1.0 - _box_area(boxes) / (height * width), lam)  # timm's correct_lam
    lam, use_cutmix, boxes = (_expand(v, count, cfg.mixup_mode) for v in (lam, use_cutmix, boxes))
    mixed = _mix_pixels(pixel_values, lam, use_cutmix, boxes)
    return mixed, mixup_targets(labels, num_classes, torch.as_tensor(lam, dtype=torch.float32), cfg.label_smoothing)


def mixup_targets(labels: torch.Tensor, num_classes: int, lam: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """timm's `mixup_target`: float32 (B, K) = lam * smooth(y) + (1 - lam) * smooth(y flipped); lam (B,) or ()."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    one_hot = torch.full((len(labels), num_classes), off, dtype=torch.float32, device=labels.device)
    one_hot.scatter_(1, labels.long().view(-1, 1), on)
    lam = lam.to(labels.device).view(-1, 1)
    return one_hot * lam + one_hot.flip(0) * (1.0 - lam)


def _draw_units(count: int, mode: str) -> int:
    """How many independent draws a batch needs: one ("batch"), one per pair ("pair"), one per image ("elem")."""
    return {"batch": 1, "pair": math.ceil(count / 2), "elem": count}[mode]


def _draw_lambdas(units: int, cfg: AugmentConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """timm's `_params_per_elem` / `_params_per_batch`: lam (units,) float64 and whether each is a CutMix."""
    if cfg.mixup_alpha > 0 and cfg.cutmix_alpha > 0:
        use_cutmix = rng.random(units) < cfg.mixup_switch_prob
        lam = np.where(use_cutmix, rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha, units),
                       rng.beta(cfg.mixup_alpha, cfg.mixup_alpha, units))
    elif cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
        use_cutmix = np.full(units, cfg.cutmix_alpha > 0)
        alpha = cfg.cutmix_alpha if cfg.cutmix_alpha > 0 else cfg.mixup_alpha
        lam = rng.beta(alpha, alpha, units)
    else:
        return np.ones(units), np.zeros(units, dtype=bool)
    mixed = rng.random(units) < cfg.mixup_prob
    return np.where(mixed, lam, 1.0), use_cutmix & mixed


def _draw_boxes(lam: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """timm's `rand_bbox`: int64 (units, 4) = (top, bottom, left, right), side sqrt(1 - lam) of the image."""
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = (height * ratio).astype(np.int64), (width * ratio).astype(np.int64)
    centre_y, centre_x = rng.integers(0, height, len(lam)), rng.integers(0, width, len(lam))
    top, bottom = np.clip(centre_y - cut_h // 2, 0, height), np.clip(centre_y + cut_h // 2, 0, height)
    left, right = np.clip(centre_x - cut_w // 2, 0, width), np.clip(centre_x + cut_w // 2, 0, width)
    return np.stack([top, bottom, left, right], axis=1)


def _box_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])


def _expand(values: np.ndarray, count: int, mode: str) -> np.ndarray:
    """Per-unit draws -> per-image values: the same for all ("batch"), mirrored pairs ("pair"), as drawn ("elem")."""
    if mode == "batch":
        return np.repeat(values, count, axis=0)
    if mode == "pair":  # image B-1-i shares pair i's draw; an odd batch's middle image pairs with itself
        return np.concatenate([values, values[: count - len(values)][::-1]])
    return values


def _mix_pixels(pixel_values: torch.Tensor, lam: np.ndarray, use_cutmix: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
    """Mixup rows: lam * x + (1 - lam) * partner; CutMix rows: the box pasted from the partner."""
    if not use_cutmix.any() and (lam == 1.0).all():
        return pixel_values
    if use_cutmix.all() and (boxes == boxes[0]).all():  # one box for the whole batch ("batch" mode)
        top, bottom, left, right = boxes[0].tolist()
        mixed = pixel_values.clone()
        mixed[..., top:bottom, left:right] = pixel_values[..., top:bottom, left:right].flip(0)
        return mixed
    partner = pixel_values.flip(0)
    count, height, width = len(lam), *pixel_values.shape[-2:]
    device = pixel_values.device
    weight = np.where(use_cutmix, 1.0, lam)  # CutMix rows keep their own pixels outside the box
    mixed = partner.lerp(pixel_values, torch.as_tensor(weight, dtype=pixel_values.dtype, device=device).view(count, 1, 1, 1))
    if use_cutmix.any():
        top, bottom, left, right = torch.as_tensor(np.where(use_cutmix[:, None], boxes, 0), device=device).view(count, 4, 1, 1).unbind(1)
        rows = torch.arange(height, device=device).view(1, height, 1)
        cols = torch.arange(width, device=device).view(1, 1, width)
        in_box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # (B, H, W); empty for mixup rows
        mixed = torch.where(in_box[:, None], partner, mixed)
    return mixed
