"""Collate decoded examples into the Trainer's batch: one batched resize + rescale + normalise.

The batch stays on the CPU: placement on the accelerator belongs to accelerate / the Trainer.
"""

from __future__ import annotations

import torch

from .compat import storage_users
from .preprocess import PreprocessConfig, empty_batch, preprocess_batch


class BufferPool:
    """Float32 batch buffers, reused once nothing outside the pool refers to them.

    A fresh 64 x 3 x 224 x 224 float32 batch is 38 MB of new pages, and faulting them in costs more
    than computing the batch (docs/BENCHMARKS.md). Each `take` returns a new view of a buffer, so any
    live reference to a batch (a Python name, an autograd saved tensor, a slice) keeps its buffer out
    of reuse. Buffers moved to shared memory (sent from a DataLoader worker) are never reused, and
    none is where torch cannot count a storage's users (`compat.storage_users`).
    """

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self.buffers: list[torch.Tensor] = []

    def take(self, shape: tuple[int, int, int, int]) -> torch.Tensor:
        """An `empty_batch(shape)` tensor whose contents are garbage, to be overwritten."""
        shape = torch.Size(shape)
        for buffer in self.buffers:
            if buffer.shape == shape and self._is_free(buffer):
                return buffer.view(shape)
        buffer = empty_batch(shape)
        if storage_users(buffer) is not None:  # else no buffer could ever be found free: keep none
            kept = [b for b in self.buffers if not b.is_shared()]
            self.buffers = kept[max(0, len(kept) - self.capacity + 1) :] + [buffer]
        return buffer.view(shape)

    @staticmethod
    def _is_free(buffer: torch.Tensor) -> bool:
        return not buffer.is_shared() and storage_users(buffer) == 1  # only the pool's own tensor

    def __getstate__(self) -> dict:  # workers start with an empty pool
        return {"capacity": self.capacity, "buffers": []}


AT_MODEL_SIZE = "at_model_size"  # example key: pixels resized (and cropped) to the model's input at decode


class ImageCollator:
    """list of {"pixels": uint8 (3, H, W), "labels": int or float (K,)} -> {"pixel_values", "labels"}.

    pixel_values: float32 (B, 3, h, w) channels-last, normalised at the model's size, written into a
    pooled buffer; labels: int64 (B,) class ids, or float32 (B, K) multi-hot rows when the examples
    carry multi-label tensors. Picklable, so DataLoader workers can run it.
    """

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg
        self.model_size_cfg = cfg.at_model_size()
        self.pool = BufferPool()

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        sizes = {tuple(example["pixels"].shape) for example in examples}
        if len(sizes) > 1:
            raise ValueError(f"images in one batch differ in size {sorted(sizes)}; load the data with "
                             "load_splits(..., preprocess=cfg) so mixed sizes are resized at decode")
        pixels = torch.stack([example["pixels"] for example in examples])  # (B, 3, H, W) uint8
        labels = collate_labels([example["labels"] for example in examples])  # (B,) or (B, K)
        cfg = self.model_size_cfg if examples[0].get(AT_MODEL_SIZE) else self.cfg
        out = self.pool.take((len(examples), 3, *cfg.output_size(*pixels.shape[-2:])))
        return {"pixel_values": preprocess_batch(pixels, cfg, out=out), "labels": labels}


def collate_labels(labels: list) -> torch.Tensor:
    """int class ids -> int64 (B,); multi-hot tensors (K,) -> float32 (B, K)."""
    if labels and isinstance(labels[0], torch.Tensor):
        return torch.stack(labels).to(torch.float32)
    return torch.tensor([int(label) for label in labels], dtype=torch.int64)
