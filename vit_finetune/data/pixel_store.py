"""Batch reads of a decoded split's pixels straight from its memory-mapped Arrow file, without copies.

`datasets` answers `rows[indices]` by taking the rows through its indices mapping and converting each
nested (3, H, W) list to numpy: ~25 ms for a batch of 128 CIFAR images, as much as the rest of a tiny
model's training step on this CPU. The decoded pixels are one fixed-shape uint8 column, so the values
of each Arrow record batch are one contiguous (n, 3, H, W) uint8 block: viewed as numpy in place, a
batch is one small copy per image (~0.3 ms for 128).
"""

from __future__ import annotations

import logging
import math

import datasets
import numpy as np
import pyarrow as pa

from .compat import dataset_row_mapping

logger = logging.getLogger(__name__)


class PixelStore:
    """`take(indices)` -> uint8 (B, 3, H, W) of the logical rows `indices` of a decoded split.

    The in-place views are made on first use in each process (views of a memory map do not pickle;
    a DataLoader worker makes its own). Layouts other than a fixed-shape pixels column, and a
    `datasets` release without the row mapping `compat.dataset_row_mapping` reads, fall back to
    `datasets`' own row access.
    """

    def __init__(self, rows: datasets.Dataset):
        self.rows = rows
        self._views: tuple[list[np.ndarray], np.ndarray, np.ndarray] | None = None
        self._fallback = rows.with_format("numpy", columns=["pixels"], dtype=np.uint8)  # default widens to int64

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_views": None}

    def take(self, indices: list[int]) -> np.ndarray:
        """uint8 (B, 3, H, W), a new array (the file's pages are never written to)."""
        views = self._make_views() if self._views is None else self._views
        if not views:  # () once in-place views were found impossible here
            return self._fallback[list(indices)]["pixels"]
        blocks, starts, physical = views
        rows = physical[np.asarray(indices, dtype=np.int64)]  # (B,) rows of the file
        block = np.searchsorted(starts, rows, side="right") - 1  # (B,) record batch of each row
        return np.stack([blocks[b][r - starts[b]] for b, r in zip(block.tolist(), rows.tolist())])

    def _make_views(self) -> tuple | tuple[()]:
        physical = dataset_row_mapping(self.rows)  # (len(rows),) file row of each logical row
        blocks = _block_views(self.rows)
        if physical is None or blocks is None:
            self._views = ()
            return ()
        starts = np.cumsum([0] + [len(block) for block in blocks[:-1]])  # first file row of each block
        self._views = (blocks, starts, physical)
        return self._views


def _block_views(rows: datasets.Dataset) -> list[np.ndarray] | None:
    """Each record batch of the file's pixels column as a (rows, 3, H, W) numpy view; None if the layout
    does not allow it (not a fixed-shape uint8 column)."""
    try:
        shape = tuple(rows.features["pixels"].shape)  # (3, H, W)
        return [_block_view(chunk, shape) for chunk in rows.data.column("pixels").chunks]
    except (AttributeError, KeyError, ValueError, pa.ArrowException) as err:
        logger.info("pixels column read through datasets (no in-place view: %s)", err)
        return None


def _block_view(chunk: pa.Array, shape: tuple[int, ...]) -> np.ndarray:
    """The values of one record batch of an ArrayND column as a (rows, *shape) numpy view."""
    values = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
    for _ in shape:
        values = values.flatten()  # list<list<list<uint8>>> -> uint8, honouring slice offsets
    if values.null_count or len(values) != len(chunk) * math.prod(shape):
        raise ValueError(f"pixels block of {len(chunk)} rows has {len(values)} values, not {math.prod(shape)} each")
    return values.to_numpy(zero_copy_only=True).reshape(len(chunk), *shape)
