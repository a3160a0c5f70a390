"""Train-time augmentation of a batch of decoded uint8 images (B, 3, H, W) with plain torch ops.

Order (timm's and torchvision's): crop, flip, auto_augment (`auto_augment.py`), colour jitter
(`color.py`). Random erasing and mixup / cutmix work on the normalised, collated batch and run in
the training step (`erasing.py`, `mixup.py`).

Each image gets its own random draws, as if augmented alone; padded crops and flips run as one
gather / select over the whole batch (per-example Python work would cost more than the model step
of a small model). Every random draw comes from torch's global RNG, which the Trainer seeds (and
the DataLoader seeds per worker from it), so the same seed gives identical batches. Outputs keep
the input size, so the collator resizes the batch to the model's size in one batched step.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from .auto_augment import auto_augment, parse_auto_augment
from .color import color_jitter
from .config import AugmentConfig


def augment_batch(pixels: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, H, W): the configured crop, flip, auto_augment and colour jitter."""
    with one_thread():
        return _augment(pixels, cfg)


@contextlib.contextmanager
def one_thread():
    """Run torch's ops on one thread inside the block (DataLoader workers already do).

    Augmentation is many small ops on parts of a batch: a second thread saves little on an idle
    machine (32 px CIFAR, RandAugment: 12 ms vs 14 ms per batch of 128), and when other processes
    keep the cores busy every op waits for a descheduled thread (measured 240-440 ms vs 11-14 ms).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _augment(pixels: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    if cfg.crop == "random_resized":
        pixels = torch.stack([random_resized_crop(image, cfg.scale, cfg.ratio) for image in pixels])
    elif cfg.crop == "random_padded":
        pixels = random_padded_crop(pixels, cfg.padding)
    if cfg.horizontal_flip:
        flip = torch.rand(pixels.shape[0]) < 0.5  # (B,)
        pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    if cfg.auto_augment is not None:
        pixels = auto_augment(pixels, parse_auto_augment(cfg.auto_augment))
    if cfg.color_jitter.enabled:
        pixels = color_jitter(pixels, cfg.color_jitter)
    return pixels


def random_padded_crop(pixels: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad each image `padding` px on every side, then crop its original (H, W) at a random offset."""
    if padding == 0:
        return pixels
    B, C, H, W = pixels.shape
    padded = F.pad(pixels, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    top, left = torch.randint(0, 2 * padding + 1, (2, B, 1))  # 2 x (B, 1)
    rows, cols = top + torch.arange(H), left + torch.arange(W)  # (B, H), (B, W)
    batch, channel = torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def random_resized_crop(pixels: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float]) -> torch.Tensor:
    """Crop a random area fraction in `scale` with aspect ratio in `ratio`, resize it back to (H, W)."""
    height, width = pixels.shape[-2:]
    top, left, crop_h, crop_w = crop_box(height, width, scale, ratio)
    crop = pixels[:, top : top + crop_h, left : left + crop_w].unsqueeze(0)  # (1, 3, h, w)
    crop = crop.contiguous(memory_format=torch.channels_last)
    return F.interpolate(crop, size=(height, width), mode="bilinear", antialias=True)[0]


def crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """The torchvision RandomResizedCrop sampler: 10 tries, then the largest centred box in `ratio`."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(()).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(()).uniform_(log_ratio[0], log_ratio[1]).item())
        crop_w, crop_h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, ()).item())
            left = int(torch.randint(0, width - crop_w + 1, ()).item())
            return top, left, crop_h, crop_w
    return _central_box(height, width, ratio)


def _central_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    aspect = width / height
    crop_w, crop_h = width, height
    if aspect < ratio[0]:
        crop_h = round(width / ratio[0])
    elif aspect > ratio[1]:
        crop_w = round(height * ratio[1])
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w
