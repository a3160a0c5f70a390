"""Tuned routes of `preprocess.preprocess_batch`: the same model input, computed faster.

`preprocess_batch` calls `preprocess_into` when `applies` says a tuned route fits the batch; the
plain definition (`preprocess._preprocess_into`: resize, centre crop, scale and shift) is passed in
and stays the reference that tests hold both routes to.

- **Row stretching** (bilinear upsampling by a whole factor k in height, e.g. CIFAR's 32 -> 224 px,
  7x): the plain definition at the source height (PIL's exact horizontal pass, normalised) fills k
  times fewer rows, then two broadcast `lerp`s write every output row once. Within half a grey level
  of the plain route: only PIL's rounding to uint8 between its two passes is missing. Runs on the
  caller's thread: torch spreads the float ops over the cores itself.
- **Chunks**: any other batch larger than one chunk runs the plain definition on cache-sized chunks
  (intermediates stay in cache between the resize, the cast and the normalisation), side by side on
  one thread per core, since torch's uint8 resize kernel uses one core. Bitwise the plain result.

Speed measurements: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable

import torch

if TYPE_CHECKING:
    from .preprocess import PreprocessConfig

# out, pixels, cfg -> out: the plain definition, writing a channels-last float32 batch.
PlainRoute = Callable[[torch.Tensor, torch.Tensor, "PreprocessConfig"], torch.Tensor]

# Most float32 output bytes per chunk: a chunk's intermediates stay in cache.
CHUNK_BYTES = 5 << 20
_chunk_threads: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, threads, pool)
_scratch = threading.local()  # per-thread float32 rows, see `_scratch_floats`


def applies(pixels: torch.Tensor, cfg: PreprocessConfig) -> bool:
    """Whether a tuned route fits a uint8 (B, 3, H, W) batch: a row stretch, or more than one chunk."""
    height, width = pixels.shape[-2:]
    if row_stretch_factor(cfg, height, width) is not None:
        return True
    return pixels.shape[0] > _chunk_images(cfg.output_size(height, width))


def preprocess_into(out: torch.Tensor, pixels: torch.Tensor, cfg: PreprocessConfig, plain: PlainRoute) -> torch.Tensor:
    """out (float32 (B, 3, h, w), channels-last) = the model input of uint8 `pixels`, by a tuned route.

    `plain(out, pixels, cfg)` is the plain definition; the chunk route runs it on parts of the batch.
    """
    if row_stretch_factor(cfg, *pixels.shape[-2:]) is not None:
        _stretch_into(out, pixels, cfg, plain)
    else:
        _in_chunks(out, pixels, cfg, plain)
    return out


# ---- whole-factor row stretching ------------------------------------------------------------


def row_stretch_factor(cfg: PreprocessConfig, height: int, width: int) -> int | None:
    """k when the bilinear resize of a (height, width) image stretches its rows to k * height, else None.

    None also when the image needs no resize at all, and with a centre crop.
    """
    target = cfg.resized_size(height, width)
    if cfg.resample != "bilinear" or cfg.do_center_crop or target == (height, width):
        return None
    return target[0] // height if target[0] % height == 0 else None


def _stretch_into(out: torch.Tensor, pixels: torch.Tensor, cfg: PreprocessConfig, plain: PlainRoute) -> None:
    """out = the batch resized as `row_stretch_factor` allows and normalised, all on this thread."""
    batch, height, width = pixels.shape[0], pixels.shape[2], out.shape[-1]
    padded_rows = _scratch_floats((batch, height + 2, width * 3))  # (B, 1 + H + 1, w*3)
    source_rows = padded_rows[:, 1:-1].view(batch, height, width, 3).permute(0, 3, 1, 2)  # (B, 3, H, w)
    width_only = dataclasses.replace(cfg, height=height, width=width, shortest_edge=None)
    plain(source_rows, pixels, width_only)  # PIL's horizontal pass alone, normalised
    padded_rows[:, 0], padded_rows[:, -1] = padded_rows[:, 1], padded_rows[:, -2]  # edge padding
    _stretch_rows(padded_rows, out.permute(0, 2, 3, 1).view(batch, out.shape[2], width * 3))  # (B, h, w*3)


def _stretch_rows(padded_rows: torch.Tensor, out: torch.Tensor) -> None:
    """Bilinear upsampling of (b, 1 + h + 1, r) edge-padded rows to out (b, k * h, r), as PIL samples.

    Output row k*i + j reads source position i + (j + 0.5) / k - 0.5: between rows i - 1 and i for
    the first k // 2 phases j, between i and i + 1 for the rest (the padding clamps the edges). Each
    group is one broadcast `lerp` over all i.
    """
    b, h, r = padded_rows.shape[0], padded_rows.shape[1] - 2, padded_rows.shape[2]
    k = out.shape[1] // h
    offsets = [(j + 0.5) / k - 0.5 for j in range(k)]  # in (-0.5, 0.5)
    phases = out.view(b, h, k, r)  # out row k*i + j = phases[:, i, j]
    below, above = k // 2, slice(k // 2, k)  # phases with negative offsets, the rest
    if below:
        fractions = torch.tensor([offset + 1 for offset in offsets[:below]])[:, None]  # (below, 1)
        torch.lerp(padded_rows[:, :h, None], padded_rows[:, 1 : h + 1, None], fractions, out=phases[:, :, :below])
    fractions = torch.tensor(offsets[above])[:, None]  # (k - below, 1)
    torch.lerp(padded_rows[:, 1 : h + 1, None], padded_rows[:, 2:, None], fractions, out=phases[:, :, above])


def _scratch_floats(shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of `shape` in memory this thread reuses (contents garbage).

    Fresh megabytes would be page-faulted in on every batch, which costs more than filling them.
    Made outside inference mode, so that training can write into it after an evaluation did.
    """
    numel = math.prod(shape)
    if getattr(_scratch, "floats", None) is None or _scratch.floats.numel() < numel:
        with torch.inference_mode(False):
            _scratch.floats = torch.empty(numel)
    return _scratch.floats[:numel].view(shape)


# ---- cache-sized chunks on one thread per core ----------------------------------------------


def _chunk_images(size: tuple[int, int]) -> int:
    """Images per chunk for an output of (h, w): at most `CHUNK_BYTES` of float32, at least one image."""
    return max(1, CHUNK_BYTES // (4 * 3 * size[0] * size[1]))


def _in_chunks(out: torch.Tensor, pixels: torch.Tensor, cfg: PreprocessConfig, plain: PlainRoute) -> None:
    """`plain` on cache-sized chunks of the batch, side by side on this process's threads."""
    step = _chunk_images(out.shape[-2:])
    chunks = [(out[i : i + step], pixels[i : i + step]) for i in range(0, pixels.shape[0], step)]
    _map_on_threads(lambda chunk: plain(*chunk, cfg), chunks)


def _map_on_threads(fn: Callable[[tuple], object], items: Iterable[tuple]) -> None:
    """fn(item) for every item, on the chunk threads (or this one), in the caller's inference mode.

    Inference mode is per thread, and an inference-mode `out` accepts writes only inside it.
    """
    pool = _chunk_pool()
    if pool is None:
        for item in items:
            fn(item)
        return
    inference = torch.is_inference_mode_enabled()

    def run(item: tuple) -> None:
        with torch.inference_mode(inference):
            fn(item)

    list(pool.map(run, items))  # list(): wait for all, and raise the first error


def _chunk_pool() -> ThreadPoolExecutor | None:
    """This process's chunk threads, one per torch thread (None if just one).

    Made again in a forked child (a DataLoader worker), whose copy of the parent's pool has no threads.
    """
    global _chunk_threads
    threads = torch.get_num_threads()
    if threads < 2:
        return None
    if _chunk_threads is None or _chunk_threads[:2] != (os.getpid(), threads):
        _chunk_threads = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="preprocess"))
    return _chunk_threads[2]
