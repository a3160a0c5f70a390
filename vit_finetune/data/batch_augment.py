"""The augmentations of a collated training batch: random erasing, then mixup / cutmix with soft targets.

They need the normalised batch at the model's size, and mixup needs the whole batch, so they run in
the training step (the Trainer's `compute_loss`, on the device batch), never in the collator, which
evaluation shares. timm runs them at the same place: erasing in its loader, mixup in the train loop.
"""

from __future__ import annotations

import torch

from .config import AugmentConfig
from .erasing import random_erasing
from .mixup import mix_batch


def augment_train_batch(batch: dict[str, torch.Tensor], num_classes: int, cfg: AugmentConfig,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """{"pixel_values": float (B, C, H, W), "labels": int64 (B,)} -> the batch to train on.

    Random erasing overwrites boxes of `pixel_values` in place. With mixup / cutmix on (or
    `label_smoothing` > 0), "labels" becomes soft targets float32 (B, num_classes), to be trained on
    with `training.losses.soft_target_cross_entropy`; otherwise the labels stay class indices.
    """
    pixel_values, labels = batch["pixel_values"], batch["labels"]
    if cfg.random_erasing.p > 0:
        pixel_values = random_erasing(pixel_values, cfg.random_erasing, generator)
    if cfg.soft_targets:
        pixel_values, labels = mix_batch(pixel_values, labels, num_classes, cfg, generator)
    return {**batch, "pixel_values": pixel_values, "labels": labels}
