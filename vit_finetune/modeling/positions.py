"""Bicubic interpolation of learned position embeddings over the patch grid (prefix/CLS rows kept).

Numerics follow HF `interpolate_pos_encoding` (ViT and SigLIP): reshape the patch rows to the
square grid, `F.interpolate(mode="bicubic", align_corners=False)` to the new grid, flatten back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int) -> torch.Tensor:
    """Resize a (1, prefix + h*w, D) position table to (1, prefix + new_h*new_w, D).

    The first `num_prefix_tokens` rows (the CLS position) are kept as they are; the stored
    patch grid must be square. Returns the input unchanged when the grid already matches.
    """
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = math.isqrt(patches.shape[1])
    if old * old != patches.shape[1]:
        raise ValueError(f"position table has {patches.shape[1]} patch rows, not a square grid")
    if (old, old) == tuple(new_grid):
        return pos_embed
    D = patches.shape[-1]
    grid = patches.reshape(1, old, old, D).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)  # (1, D, h', w')
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, D)  # (1, h'*w', D)
    return torch.cat([prefix, patches], dim=1)  # (1, prefix + h'*w', D)
