"""Collate decoded examples into the Trainer's batch: one batched resize + rescale + normalise.

The batch stays on the CPU: placement on the accelerator belongs to accelerate / the Trainer.
"""

from __future__ import annotations

import torch

from .preprocess import PreprocessConfig, preprocess_batch


class ImageCollator:
    """list of {"pixels": uint8 (3, H, W), "labels": int} -> {"pixel_values", "labels"}.

    pixel_values: float32 (B, 3, h, w), normalised at the model's size; labels: int64 (B,).
    Picklable, so DataLoader workers can run it.
    """

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        sizes = {tuple(example["pixels"].shape) for example in examples}
        if len(sizes) > 1:
            raise ValueError(f"images in one batch differ in size {sorted(sizes)}; load the data with "
                             "load_splits(..., preprocess=cfg) so mixed sizes are resized at decode")
        pixels = torch.stack([example["pixels"] for example in examples])  # (B, 3, H, W) uint8
        labels = torch.tensor([int(example["labels"]) for example in examples], dtype=torch.int64)  # (B,)
        return {"pixel_values": preprocess_batch(pixels, self.cfg), "labels": labels}
