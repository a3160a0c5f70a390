"""Position tables: bicubic interpolation over the patch grid (prefix rows kept), and MAE's fixed 2-D sin-cos.

Interpolation numerics follow HF `interpolate_pos_encoding` of each family: reshape the patch rows to
the square grid, `F.interpolate(mode="bicubic", align_corners=False)` to the new grid (in float32),
flatten back. DINOv2 with registers resizes with `antialias=True` (HF's `Dinov2WithRegistersEmbeddings`),
which changes the kernel for shrinking and growing alike; the other families without it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int,
                     antialias: bool = False) -> torch.Tensor:
    """Resize a (1, prefix + h*w, D) position table to (1, prefix + new_h*new_w, D).

    The first `num_prefix_tokens` rows (CLS, distillation token) are kept as they are; the stored
    patch grid must be square. Returns the input unchanged when the grid already matches.
    """
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = math.isqrt(patches.shape[1])
    if old * old != patches.shape[1]:
        raise ValueError(f"position table has {patches.shape[1]} patch rows, not a square grid")
    if (old, old) == tuple(new_grid):
        return pos_embed
    D = patches.shape[-1]
    grid = patches.reshape(1, old, old, D).permute(0, 3, 1, 2).float()  # (1, D, h, w)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=antialias)
    patches = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, -1, D)  # (1, h'*w', D)
    return torch.cat([prefix, patches], dim=1)  # (1, prefix + h'*w', D)


def sincos_pos_embed(grid_size: int, dim: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table (1, prefix + grid_size**2, dim), zero rows for the prefix tokens.

    Each patch (row h, column w) gets [sin(w ω), cos(w ω), sin(h ω), cos(h ω)] with
    ω_k = 10000^(-k / (dim/4)), computed in float64 as MAE and HF `ViTMAEEmbeddings` do.
    """
    if dim % 4:
        raise ValueError(f"sin-cos positions need a hidden size divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (D/4,)
    h, w = torch.meshgrid(*(torch.arange(grid_size, dtype=torch.float64),) * 2, indexing="ij")  # (G, G) each
    w_angles, h_angles = w.flatten().outer(omega), h.flatten().outer(omega)  # (G*G, D/4) each
    table = torch.cat([w_angles.sin(), w_angles.cos(), h_angles.sin(), h_angles.cos()], dim=1)  # (G*G, D)
    table = torch.cat([table.new_zeros(num_prefix_tokens, dim), table])  # (prefix + G*G, D)
    return table.float().unsqueeze(0)  # (1, prefix + G*G, D)
