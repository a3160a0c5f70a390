"""The "feature extractor": uint8 images -> normalised float32 model input, in batches, with torch ops.

Settings travel with the weights: `PreprocessConfig.from_pretrained(dir)` reads the checkpoint's
`preprocessor_config.json`, `save_pretrained(dir)` writes one that `AutoImageProcessor` loads as a
`ViTImageProcessor`. Only a from-scratch model without a processor uses the dataclass defaults.

One code path serves training, evaluation and prediction: PIL image -> `pil_to_pixels` (uint8
(3, H, W), resized at decode only when asked) -> `preprocess_batch`, whose definition is resize ->
centre crop -> scale and shift. Resizing runs on uint8 tensors with torch's antialiased kernels,
which reproduce PIL's resampling (what `ViTImageProcessor` uses) to within a grey level or two, so
the batched path matches the reference processor while staying vectorised. `fast_resize` holds the
tuned routes that compute the same faster; the collator writes into reused buffers
(`collate.BufferPool`) instead of fresh memory (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import PIL
from PIL import Image

from vit_finetune.typed import error_reason

from . import fast_resize, pil_resample
from .errors import DataError

PROCESSOR_FILE = "preprocessor_config.json"
MAX_SIDE = 4096  # px: the largest height, width, shortest edge or crop size a processor config may ask for
PIL_MAJOR = int(PIL.__version__.split(".")[0])
# PIL resample codes (what preprocessor_config.json stores) <-> the torch modes that reproduce them.
PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}
TORCH_MODE = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}
# The transformers image processors whose settings these fields describe (the checkpoints of every
# supported family use one), and those for which a `size` given as one number is the shorter side
# (transformers' `default_to_square=False`); for the others it is a square. `crop_size` is a square.
PROCESSOR_TYPES = ("ViTImageProcessor", "DeiTImageProcessor", "BitImageProcessor", "CLIPImageProcessor",
                   "SiglipImageProcessor")
SHORTEST_EDGE_TYPES = ("BitImageProcessor", "CLIPImageProcessor")


@dataclass
class PreprocessConfig:
    """Image-processor settings, with `ViTImageProcessor` field names.

    Output size: `height` x `width`, or (when `shortest_edge` is set) the shorter side scaled to
    `shortest_edge` keeping the aspect ratio; then an optional centre crop to `crop_height` x
    `crop_width`. Each size is at most `MAX_SIDE` px (a config asking for more would only allocate). The defaults (224 px, bilinear, mean = std = 0.5) serve only models trained
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
    processor_type: str = "ViTImageProcessor"  # the transformers class `save_pretrained` names

    def __post_init__(self) -> None:
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)
        if self.resample not in PIL_RESAMPLE:
            raise ValueError(f"preprocess.resample: supported are {sorted(PIL_RESAMPLE)}, got {self.resample!r}")
        if (self.shortest_edge is None) == (self.height is None or self.width is None):
            raise ValueError("preprocess.height/width: give height and width, or shortest_edge (not both)")
        if self.do_center_crop and (self.crop_height is None or self.crop_width is None):
            raise ValueError("preprocess.crop_height/crop_width: required when do_center_crop is true")
        if self.processor_type not in PROCESSOR_TYPES:
            raise ValueError(f"preprocess.processor_type: supported are {list(PROCESSOR_TYPES)}, "
                             f"got {self.processor_type!r}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError(f"preprocess.image_mean/image_std: need 3 values, std > 0, got {self.image_mean}, {self.image_std}")
        sides = [side for side in (self.height, self.width, self.shortest_edge, self.crop_height, self.crop_width)
                 if side is not None]
        if any(type(side) is not int or not 0 < side <= MAX_SIDE for side in sides):
            raise ValueError(f"preprocess sizes: each must be a whole number of 1 to {MAX_SIDE} px, got {sides}")

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

    def at_model_size(self) -> "PreprocessConfig":
        """This config for pixels resized (and cropped) to the model's input at decode: rescale and normalise
        only (a second resize and crop would not be the processor's: shortest edge 256 then crop 224 would
        enlarge a 224 px crop again)."""
        return replace(self, do_resize=False, do_center_crop=False)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the model input for an image of (height, width)."""
        if self.do_center_crop:
            return self.crop_height, self.crop_width
        return self.resized_size(height, width)

    @property
    def fixed_output_size(self) -> tuple[int, int] | None:
        """(h, w) of the model input whatever the image's size, or None when it follows the image."""
        if self.do_center_crop:
            return self.crop_height, self.crop_width
        if self.do_resize and self.shortest_edge is None:
            return self.height, self.width
        return None

    def square_output_size(self) -> int | None:
        """The side of the model input when every image becomes the same square, else None."""
        size = self.fixed_output_size
        return size[0] if size is not None and size[0] == size[1] else None

    def at_resolution(self, image_size: int) -> "PreprocessConfig":
        """The same steps for a model input of `image_size` px (fine-tuning at another resolution, e.g.
        384): the crop becomes that size and the resize keeps its ratio to the crop (256 -> 224 stays
        8:7); without a crop the resize itself targets it."""
        if not self.do_center_crop:
            if self.shortest_edge is not None:
                return replace(self, shortest_edge=image_size)
            return replace(self, height=image_size, width=image_size)
        def scaled(side: int | None) -> int | None:
            return None if side is None else round(side * image_size / self.crop_height)

        return replace(self, height=scaled(self.height), width=scaled(self.width),
                       shortest_edge=scaled(self.shortest_edge), crop_height=image_size, crop_width=image_size)

    # ---- (de)serialisation -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, processor: dict) -> "PreprocessConfig":
        """Build from an image-processor dict (`preprocessor_config.json` / `processor.to_dict()`), including
        the older feature-extractor files of the hub (`"size": 224`, `"feature_extractor_type"`)."""
        kind = _processor_type(processor)
        size = _size_dict(processor.get("size"), square=kind not in SHORTEST_EDGE_TYPES)
        crop = _size_dict(processor.get("crop_size"), square=True)
        defaults = cls()
        return cls(
            processor_type=kind,
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
        processor = {"image_processor_type": self.processor_type, "size": size,
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


def _processor_type(processor: dict) -> str:
    """The transformers class a processor dict names (an older `...FeatureExtractor` as its processor);
    a class outside `PROCESSOR_TYPES` is read as a ViT processor with the same fields."""
    name = processor.get("image_processor_type") or processor.get("feature_extractor_type") or "ViTImageProcessor"
    name = name.removesuffix("Pil").replace("FeatureExtractor", "ImageProcessor").replace("Fast", "")
    return name if name in PROCESSOR_TYPES else "ViTImageProcessor"


def _size_dict(size: int | dict | None, square: bool) -> dict:
    """A processor `size` / `crop_size` as a dict; one number is a square, or the shorter side."""
    if size is None or isinstance(size, dict):
        return size or {}
    return {"height": size, "width": size} if square else {"shortest_edge": size}


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


def preprocess_batch(pixels: torch.Tensor, cfg: PreprocessConfig, out: torch.Tensor | None = None, *,
                     tuned: bool = True) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 (B, 3, h, w) model input: resize, centre crop, scale and shift.

    The result is channels-last in memory (strides of (B, h, w, 3)): the layout the resize kernel
    produces, which the patch-embedding convolution reads as fast as NCHW, while transposing to NCHW
    would cost more than all the rest. Pixels resized at decode take `cfg.at_model_size()` (the
    collator does that for examples marked `at_model_size`). `out` (from `empty_batch`) receives the result instead of a fresh tensor.
    Each image's result depends only on that image, never on the rest of its batch.

    Where `fast_resize` has a tuned route for the batch it computes the same faster: bitwise, except
    that bilinear upsampling by a whole factor in height (CIFAR's 32 -> 224 px) is within half a grey
    level of this definition. `tuned=False` keeps to the definition.
    """
    if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[1] != 3:
        raise ValueError(f"preprocess_batch expects uint8 (B, 3, H, W), got {pixels.dtype} {tuple(pixels.shape)}")
    out = _checked_out(out, (pixels.shape[0], 3, *cfg.output_size(*pixels.shape[-2:])))
    if pixels.shape[0] == 0:
        return out
    if tuned and fast_resize.applies(pixels, cfg):
        return fast_resize.preprocess_into(out, pixels, cfg, plain=_preprocess_into)
    return _preprocess_into(out, pixels, cfg)


def _preprocess_into(out: torch.Tensor, pixels: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """The definition: out (float32 (B, 3, h, w), channels-last) = resize_batch(pixels) * scale + shift."""
    pixels = resize_batch(pixels, cfg).contiguous(memory_format=torch.channels_last)  # uint8 (B, 3, h, w)
    scale, shift = normalize_affine(cfg, out.shape[-1])  # (w*3,): per channel, one memory row's pattern
    rows = _memory_rows(out)  # (B, h, w*3)
    rows.copy_(_memory_rows(pixels))  # uint8 -> float32
    torch.addcmul(shift, rows, scale, out=rows)  # in place (addcmul on uint8 would first allocate a float copy)
    return out


def _memory_rows(batch: torch.Tensor) -> torch.Tensor:
    """A channels-last (B, 3, h, w) tensor viewed as its memory rows (B, h, w*3), channels interleaved."""
    return batch.permute(0, 2, 3, 1).view(batch.shape[0], batch.shape[2], batch.shape[3] * 3)


def resize_batch(pixels: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, h, w) at the model's size: PIL-compatible resize, centre crop."""
    pixels = _resize_pixels(pixels, cfg.resized_size(*pixels.shape[-2:]), cfg.resample)
    if cfg.do_center_crop:
        pixels = center_crop(pixels, cfg.crop_height, cfg.crop_width)
    return pixels


def _resize_pixels(pixels: torch.Tensor, size: tuple[int, int], resample: str) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> channels-last uint8 (B, 3, *size) with torch's PIL-compatible kernel; as
    is when already that size. Each axis that changes is one pass with uint8 in between, in PIL's order
    (`pil_resizes_height_first`); torch's kernel takes the width first. Bicubic is computed as Pillow
    computes it (`pil_resample`): torch's 16-bit weights are up to two grey levels off there."""
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    if resample == "bicubic":
        height_first = pil_resizes_height_first(tuple(pixels.shape[-2:]), tuple(size))
        return pil_resample.resize(pixels, size, resample, height_first).contiguous(memory_format=torch.channels_last)
    pixels = pixels.contiguous(memory_format=torch.channels_last)  # the fast uint8 kernel's layout
    mode = TORCH_MODE[resample]
    if pil_resizes_height_first(tuple(pixels.shape[-2:]), tuple(size)):
        pixels = F.interpolate(pixels, size=(size[0], pixels.shape[-1]), mode=mode, antialias=mode != "nearest-exact")
    return F.interpolate(pixels, size=size, mode=mode, antialias=mode != "nearest-exact")


def pil_resizes_height_first(source: tuple[int, int], target: tuple[int, int]) -> bool:
    """Whether Pillow resizes (H, W) -> (h, w) vertically first: since Pillow 13 (python-pillow/Pillow#9549)
    when the height shrinks by more than twice as many pixels as the width (measured against Pillow;
    with bicubic's overshoot the order changes results by up to ~20 grey levels where uint8 clips)."""
    (height, width), (new_height, new_width) = source, target
    return PIL_MAJOR >= 13 and new_height < height and height - new_height > 2 * (width - new_width)


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


def empty_batch(shape: tuple[int, int, int, int]) -> torch.Tensor:
    """An uninitialised float32 (B, 3, h, w) batch in the layout `preprocess_batch` writes."""
    return torch.empty(shape, dtype=torch.float32, memory_format=torch.channels_last)


def _checked_out(out: torch.Tensor | None, shape: tuple[int, int, int, int]) -> torch.Tensor:
    if out is None:
        return empty_batch(shape)
    if out.shape != shape or out.dtype != torch.float32 or not out.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"preprocess_batch: out must be a float32 {shape} batch from empty_batch, "
                         f"got {out.dtype} {tuple(out.shape)}")
    return out


# ---- PIL images in (prediction, decode-time resize) ------------------------------------------


def pil_to_pixels(image: Image.Image, resize_to: PreprocessConfig | None = None) -> torch.Tensor:
    """RGB PIL image -> uint8 (3, H, W); with `resize_to`, brought to the model's size by `resize_batch`."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W)
    if resize_to is not None:
        pixels = resize_batch(pixels.unsqueeze(0), resize_to)[0].contiguous()
    return pixels


def read_preprocess(model_dir: Path) -> PreprocessConfig:
    """A model folder's `preprocessor_config.json`; one this project cannot read is a `DataError` naming it."""
    try:
        return PreprocessConfig.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:  # JSON errors are ValueErrors
        raise DataError(f"{model_dir / PROCESSOR_FILE}: not an image processor config this project "
                        f"reads: {error_reason(err)}") from None


def preprocess_images(images: list[Image.Image], cfg: PreprocessConfig) -> torch.Tensor:
    """RGB PIL images (any sizes) -> float32 (B, 3, h, w), the same numbers the data-set path gives.

    Each image goes through `preprocess_batch` alone (results do not depend on the batch), so an
    image of a data set of one size gets exactly the input evaluation gives it. (A data set of mixed
    sizes is resized at decode by `resize_batch`; there, an image whose height a bilinear resize
    multiplies by a whole factor can differ from this by half a grey level.)
    """
    return torch.cat([preprocess_batch(pil_to_pixels(image).unsqueeze(0), cfg) for image in images])  # (B, 3, h, w)
