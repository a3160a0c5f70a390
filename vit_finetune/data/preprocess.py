"""The "feature extractor": resize + rescale + normalise, on whole uint8 batches with torch ops.

Settings travel with the weights: `PreprocessConfig.from_pretrained(dir)` reads the checkpoint's
`preprocessor_config.json`, `save_pretrained(dir)` writes one that `AutoImageProcessor` loads as a
`ViTImageProcessor`. Only a from-scratch model without a processor uses the dataclass defaults.

Resizing runs on uint8 tensors with torch's antialiased kernels, which reproduce PIL's resampling
(what `ViTImageProcessor` uses) to within a grey level or two, so the batched path matches the
reference processor while staying vectorised. Bilinear upsampling by a whole factor in height
(CIFAR's 32 -> 224 px) keeps PIL's exact horizontal pass and stretches the rows in float32 after
normalising (`_stretch_rows`): within half a grey level of PIL, and each output value is written
once. One code path serves training, evaluation and prediction: PIL image -> `pil_to_pixels`
(uint8 (3, H, W), resized at decode only when asked) -> `preprocess_batch` (resize, rescale,
normalise).

Speed (docs/BENCHMARKS.md): batches come out channels-last (the resize kernel's layout); the
uint8 route runs in cache-sized chunks on one thread per core (the uint8 resize kernel is
single-threaded), the row-stretching route on the caller's thread (torch spreads its float ops over
the cores); the collator writes into reused buffers (`collate.BufferPool`) instead of fresh memory.
"""

from __future__ import annotations

import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PROCESSOR_FILE = "preprocessor_config.json"
# PIL resample codes (what preprocessor_config.json stores) <-> the torch modes that reproduce them.
PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}
TORCH_MODE = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}


@dataclass
class PreprocessConfig:
    """Image-processor settings, with `ViTImageProcessor` field names.

    Output size: `height` x `width`, or (when `shortest_edge` is set) the shorter side scaled to
    `shortest_edge` keeping the aspect ratio; then an optional centre crop to `crop_height` x
    `crop_width`. The defaults (224 px, bilinear, mean = std = 0.5) serve only models trained
    from scratch; pretrained checkpoints bring their own.
    """

    height: int | None = 224
    width: int | None = 224
    resample: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    shortest_edge: int | None = None
    do_center_crop: bool = False
    crop_height: int | None = None
    crop_width: int | None = None

    def __post_init__(self) -> None:
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)
        if self.resample not in PIL_RESAMPLE:
            raise ValueError(f"preprocess.resample: supported are {sorted(PIL_RESAMPLE)}, got {self.resample!r}")
        if (self.shortest_edge is None) == (self.height is None or self.width is None):
            raise ValueError("preprocess.height/width: give height and width, or shortest_edge (not both)")
        if self.do_center_crop and (self.crop_height is None or self.crop_width is None):
            raise ValueError("preprocess.crop_height/crop_width: required when do_center_crop is true")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError(f"preprocess.image_mean/image_std: need 3 values, std > 0, got {self.image_mean}, {self.image_std}")

    # ---- sizes -------------------------------------------------------------------------------

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after the resize step, exactly as transformers computes it."""
        if not self.do_resize:
            return height, width
        if self.shortest_edge is None:
            return self.height, self.width
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the model input for an image of (height, width)."""
        if self.do_center_crop:
            return self.crop_height, self.crop_width
        return self.resized_size(height, width)

    # ---- (de)serialisation -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, processor: dict) -> "PreprocessConfig":
        """Build from an image-processor dict (`preprocessor_config.json` / `processor.to_dict()`)."""
        size, crop = processor.get("size") or {}, processor.get("crop_size") or {}
        defaults = cls()
        return cls(
            height=size.get("height"), width=size.get("width"), shortest_edge=size.get("shortest_edge"),
            resample=_resample_name(processor.get("resample", PIL_RESAMPLE[defaults.resample])),
            do_resize=processor.get("do_resize", defaults.do_resize),
            do_rescale=processor.get("do_rescale", defaults.do_rescale),
            rescale_factor=processor.get("rescale_factor", defaults.rescale_factor),
            do_normalize=processor.get("do_normalize", defaults.do_normalize),
            image_mean=_three(processor.get("image_mean", defaults.image_mean)),
            image_std=_three(processor.get("image_std", defaults.image_std)),
            do_center_crop=bool(processor.get("do_center_crop") or False),
            crop_height=crop.get("height"), crop_width=crop.get("width"),
        )

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path) -> "PreprocessConfig":
        """Read a checkpoint folder's `preprocessor_config.json` (a hub id goes via AutoImageProcessor)."""
        path = Path(name_or_dir) / PROCESSOR_FILE
        if path.is_file():
            return cls.from_dict(json.loads(path.read_text()))
        from transformers import AutoImageProcessor

        return cls.from_dict(AutoImageProcessor.from_pretrained(str(name_or_dir)).to_dict())

    def to_processor_dict(self) -> dict:
        """The `preprocessor_config.json` content of a `ViTImageProcessor` with these settings."""
        size = {"height": self.height, "width": self.width}
        if self.shortest_edge is not None:
            size = {"shortest_edge": self.shortest_edge}
        processor = {"image_processor_type": "ViTImageProcessor", "size": size,
                     "resample": PIL_RESAMPLE[self.resample]}
        fields = asdict(self)
        for key in ("do_resize", "do_rescale", "rescale_factor", "do_normalize", "do_center_crop"):
            processor[key] = fields[key]
        processor["image_mean"], processor["image_std"] = list(self.image_mean), list(self.image_std)
        if self.do_center_crop:
            processor["crop_size"] = {"height": self.crop_height, "width": self.crop_width}
        return processor

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write `preprocessor_config.json` into `out_dir`; returns its path."""
        path = Path(out_dir) / PROCESSOR_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_processor_dict(), indent=2) + "\n")
        return path


def _resample_name(code: int | str) -> str:
    if isinstance(code, str):
        return code.lower()
    names = {value: key for key, value in PIL_RESAMPLE.items()}
    if int(code) not in names:
        raise ValueError(f"preprocess.resample: PIL resample code {code} is not supported (only {names})")
    return names[int(code)]


def _three(values: float | list[float]) -> tuple[float, float, float]:
    return tuple(float(v) for v in values) if isinstance(values, (list, tuple)) else (float(values),) * 3


# ---- the batched path ------------------------------------------------------------------------


def resize_batch(pixels: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, h, w) at the model's size: PIL-compatible resize, centre crop."""
    pixels = _resize_pixels(pixels, cfg.resized_size(*pixels.shape[-2:]), cfg.resample)
    if cfg.do_center_crop:
        pixels = center_crop(pixels, cfg.crop_height, cfg.crop_width)
    return pixels


def _resize_pixels(pixels: torch.Tensor, size: tuple[int, int], resample: str) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> channels-last uint8 (B, 3, *size) with torch's PIL-compatible kernel; as
    is when already that size. Each axis that changes is one pass, the width first, as in PIL."""
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    pixels = pixels.contiguous(memory_format=torch.channels_last)  # the fast uint8 kernel's layout
    mode = TORCH_MODE[resample]
    return F.interpolate(pixels, size=size, mode=mode, antialias=mode != "nearest-exact")


def center_crop(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop (..., H, W) to (..., height, width) around the centre, offsets as in transformers."""
    top, left = (pixels.shape[-2] - height) // 2, (pixels.shape[-1] - width) // 2
    if top < 0 or left < 0:
        raise ValueError(f"centre crop {height}x{width} is larger than the image {tuple(pixels.shape[-2:])}")
    return pixels[..., top : top + height, left : left + width]


def normalize_affine(cfg: PreprocessConfig, width: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each float32 (width * 3,), with model input = uint8 value * scale + shift.

    Per channel, repeated `width` times: the pattern of one channels-last memory row. Computed in
    double precision, then rounded once.
    """
    scale = [cfg.rescale_factor if cfg.do_rescale else 1.0] * 3
    shift = [0.0] * 3
    if cfg.do_normalize:
        scale = [factor / std for factor, std in zip(scale, cfg.image_std)]
        shift = [-mean / std for mean, std in zip(cfg.image_mean, cfg.image_std)]
    return torch.tensor(scale * width), torch.tensor(shift * width)


def _rows(batch: torch.Tensor) -> torch.Tensor:
    """A channels-last (B, 3, h, w) tensor viewed as its memory rows (B*h, w*3), channels interleaved."""
    return batch.permute(0, 2, 3, 1).view(-1, batch.shape[-1] * 3)


# Most float32 output bytes per chunk of `preprocess_batch`: a chunk's intermediates stay in cache
# between the resize, the cast and the normalisation, instead of streaming the whole batch through
# memory several times.
CHUNK_BYTES = 5 << 20
_chunk_threads: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, threads, pool)
_scratch = threading.local()  # per-thread intermediates, see `_scratch_floats`


def _chunk_pool() -> ThreadPoolExecutor | None:
    """This process's threads for `preprocess_batch` steps, one per torch thread (None if just one).

    torch's uint8 resize kernel uses one core, so steps run side by side instead. The pool is made
    again in a forked child (a DataLoader worker), whose copy of the parent's pool has no threads.
    """
    global _chunk_threads
    threads = torch.get_num_threads()
    if threads < 2:
        return None
    if _chunk_threads is None or _chunk_threads[:2] != (os.getpid(), threads):
        _chunk_threads = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="preprocess"))
    return _chunk_threads[2]


def empty_batch(shape: tuple[int, int, int, int]) -> torch.Tensor:
    """An uninitialised float32 (B, 3, h, w) batch in the layout `preprocess_batch` writes."""
    return torch.empty(shape, dtype=torch.float32, memory_format=torch.channels_last)


def preprocess_batch(pixels: torch.Tensor, cfg: PreprocessConfig, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 (B, 3, h, w) model input (resize, rescale, normalise).

    The result is channels-last in memory (strides of (B, h, w, 3)): the layout the resize kernel
    produces, which the patch-embedding convolution reads as fast as NCHW, while transposing to NCHW
    would cost more than all the rest. Pixels already at the model's input size (resized at decode)
    skip the resize and crop. `out` (from `empty_batch`) receives the result instead of a fresh tensor.

    Bilinear upsampling by a whole factor in height (CIFAR's 32 -> 224 px: 7x) takes a faster route,
    `_stretch_rows`, within half a grey level of PIL; every other resize is PIL's to a grey level or
    two. Each image's result depends only on that image, never on the rest of its batch.
    """
    if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[1] != 3:
        raise ValueError(f"preprocess_batch expects uint8 (B, 3, H, W), got {pixels.dtype} {tuple(pixels.shape)}")
    height, width = cfg.output_size(*pixels.shape[-2:])
    out = _checked_out(out, (pixels.shape[0], 3, height, width))
    if pixels.shape[0] == 0:
        return out
    scale, shift = normalize_affine(cfg, width)  # (w*3,): one memory row's pattern
    if row_stretch_factor(cfg, *pixels.shape[-2:]) is not None:
        _stretch_into(out, pixels, cfg, scale, shift)
        return out
    step = max(1, CHUNK_BYTES // (4 * 3 * height * width))
    chunks = [(pixels[i : i + step], out[i : i + step]) for i in range(0, pixels.shape[0], step)]
    inference = torch.is_inference_mode_enabled()  # the caller's mode, for writes into `out` from the pool

    def fill(chunk: tuple[torch.Tensor, torch.Tensor]) -> None:
        with torch.inference_mode(inference):
            _preprocess_chunk(*chunk, cfg, scale, shift)

    pool = _chunk_pool() if len(chunks) > 1 else None
    list(pool.map(fill, chunks)) if pool is not None else [fill(chunk) for chunk in chunks]
    return out


def _checked_out(out: torch.Tensor | None, shape: tuple[int, int, int, int]) -> torch.Tensor:
    if out is None:
        return empty_batch(shape)
    if out.shape != shape or out.dtype != torch.float32 or not out.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"preprocess_batch: out must be a float32 {shape} batch from empty_batch, "
                         f"got {out.dtype} {tuple(out.shape)}")
    return out


def _preprocess_chunk(pixels: torch.Tensor, out: torch.Tensor, cfg: PreprocessConfig, scale: torch.Tensor,
                      shift: torch.Tensor) -> None:
    """Resize a uint8 chunk to `out`'s size if needed, then out = pixels * scale + shift per channel."""
    if pixels.shape[-2:] != out.shape[-2:]:
        pixels = resize_batch(pixels, cfg)
    _normalize_into(_rows(out), pixels, scale, shift)


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


def _normalize_into(rows: torch.Tensor, pixels: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """rows (float32, (..., w*3): the batch's memory rows) = pixels * scale + shift, channels interleaved."""
    rows.copy_(_rows(pixels.contiguous(memory_format=torch.channels_last)).view(rows.shape))  # uint8 -> float32
    torch.addcmul(shift, rows, scale, out=rows)  # (addcmul on uint8 would first allocate a float copy)


# ---- whole-factor upsampling of rows ---------------------------------------------------------


def row_stretch_factor(cfg: PreprocessConfig, height: int, width: int) -> int | None:
    """k when the bilinear resize of a (height, width) image stretches its rows to k * height, else None.

    Then `preprocess_batch` resizes the width with PIL's exact uint8 pass and the height by
    `_stretch_rows` on normalised floats, which writes each output value once. None also when
    the image needs no resize at all.
    """
    target = cfg.resized_size(height, width)
    if cfg.resample != "bilinear" or cfg.do_center_crop or target == (height, width):
        return None
    return target[0] // height if target[0] % height == 0 else None


def _stretch_into(out: torch.Tensor, pixels: torch.Tensor, cfg: PreprocessConfig, scale: torch.Tensor,
                  shift: torch.Tensor) -> None:
    """out = the batch resized as `row_stretch_factor` allows, normalised: all on this thread.

    torch spreads each float op over all cores itself, and the one uint8 resize here is small, so
    the chunk pool would only add thread hand-offs (measured slower, docs/BENCHMARKS.md).
    """
    width = out.shape[-1]
    pixels = _resize_pixels(pixels, (pixels.shape[-2], width), cfg.resample)  # PIL's horizontal pass alone, exact
    padded_rows = _scratch_floats((pixels.shape[0], pixels.shape[2] + 2, width * 3))  # (B, 1 + H + 1, w*3)
    _normalize_into(padded_rows[:, 1:-1], pixels, scale, shift)
    padded_rows[:, 0], padded_rows[:, -1] = padded_rows[:, 1], padded_rows[:, -2]  # edge padding
    _stretch_rows(padded_rows, _rows(out).view(out.shape[0], out.shape[2], -1))  # (B, h, w*3)


def _stretch_rows(padded_rows: torch.Tensor, out: torch.Tensor) -> None:
    """Bilinear upsampling of (b, 1 + h + 1, r) edge-padded rows to out (b, k * h, r), as PIL samples.

    Output row k*i + j reads source position i + (j + 0.5) / k - 0.5: between rows i - 1 and i for
    the first k // 2 phases j, between i and i + 1 for the rest (the padding clamps the edges). Each
    group is one broadcast `lerp` over all i. Only PIL's rounding to uint8 differs (at most half a
    grey level).
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


# ---- PIL images in (prediction, decode-time resize) ------------------------------------------


def pil_to_pixels(image: Image.Image, resize_to: PreprocessConfig | None = None) -> torch.Tensor:
    """RGB PIL image -> uint8 (3, H, W); with `resize_to`, brought to the model's size by `resize_batch`."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W)
    if resize_to is not None:
        pixels = resize_batch(pixels.unsqueeze(0), resize_to)[0].contiguous()
    return pixels


def preprocess_images(images: list[Image.Image], cfg: PreprocessConfig) -> torch.Tensor:
    """RGB PIL images (any sizes) -> float32 (B, 3, h, w), the same numbers the data-set path gives.

    Each image goes through `preprocess_batch` alone (results do not depend on the batch), so an
    image of a data set of one size gets exactly the input evaluation gives it. (A data set of mixed
    sizes is resized at decode by `resize_batch`; there, an image whose height a bilinear resize
    multiplies by a whole factor can differ from this by half a grey level.)
    """
    return torch.cat([preprocess_batch(pil_to_pixels(image).unsqueeze(0), cfg) for image in images])  # (B, 3, h, w)
