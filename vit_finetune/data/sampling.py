"""`data.sampler: balanced`: class-balanced sampling of the training split, with replacement.

Each epoch draws len(split) indices with replacement, example i with probability proportional to
1 / count(label_i), so every class is drawn equally often on average (torch's `WeightedRandomSampler`
with those weights). The draws come from a generator seeded by (seed, epoch): the Trainer calls
`set_epoch` before each epoch (through accelerate's loader), so a resumed run draws the same epoch
again and skips the batches it had trained on. In a multi-process run every process builds the same
sequence and accelerate's `BatchSamplerShard` gives each process its own batches of it (batch j to
process j mod P), as it does with the default random sampler: the processes see disjoint batches
whose union is the single-process sequence.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

SEED_STRIDE = 1_000_003  # a prime: (seed, epoch) pairs map to distinct generator seeds for epochs below it


class BalancedSampler(torch.utils.data.Sampler[int]):
    """len(labels) indices per epoch, drawn with replacement, each with probability proportional to 1 / its class count."""

    def __init__(self, labels: Sequence[int] | np.ndarray, seed: int):
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels)
        self.weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.float64)  # (N,)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.weights)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * SEED_STRIDE + self.epoch)
        yield from torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator).tolist()
