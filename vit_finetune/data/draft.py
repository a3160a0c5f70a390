"""Train-time random-resized crops decoded from the original image, with PIL's JPEG draft mode.

    pixels = decode_random_crop(jpeg_bytes, "shard-00.tar/123.jpg", size=(224, 224), scale=(0.08, 1), ratio=(3/4, 4/3))

The crop box is drawn on the original image (the torchvision sampler, `augment.crop_box`, from
torch's RNG). A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size for much less work (the DCT is
scaled, most of the entropy decoding stays); `draft` asks for the smallest of these scales at which
the crop still covers the output size, so no detail the output could show is lost. The crop is then
resized to the output size by PIL's antialiased bilinear filter (the cached path's resampling, which
torch's `antialias=True` kernel reproduces), and the batched preprocessing normalises it. Other
formats decode in full. Compared with a full decode of the same box, the result differs by well under
a grey level on average and by a few at most (`tests/test_data_draft.py`), and costs a fraction of
the time for large JPEGs (README, "Streaming").
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageOps

from .augment import crop_box
from .images import checked_image, to_rgb

Box = tuple[float, float, float, float]  # left, top, right, bottom in original pixels
ORIENTATION = 0x0112  # EXIF tag
SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees


def decode_random_crop(source: str | bytes, name: str, size: tuple[int, int], scale: tuple[float, float],
                       ratio: tuple[float, float], use_draft: bool = True) -> torch.Tensor:
    """uint8 (3, h, w): a random-resized crop of the image file `source` (path or bytes), at `size` (h, w)."""
    with checked_image(source, name) as image:
        width, height = image.size
        top, left, crop_h, crop_w = crop_box(height, width, scale, ratio)
        return crop_resize(image, (left, top, left + crop_w, top + crop_h), size, use_draft)


def decode_crop(source: str | bytes, name: str, box: Box, size: tuple[int, int], use_draft: bool = True) -> torch.Tensor:
    """uint8 (3, h, w): the given box of the image file `source`, resized to `size` (h, w)."""
    with checked_image(source, name) as image:
        return crop_resize(image, box, size, use_draft)


def crop_resize(image: Image.Image, box: Box, size: tuple[int, int], use_draft: bool = True) -> torch.Tensor:
    """uint8 (3, h, w) of `box` (original coordinates) of an opened, undecoded image, EXIF orientation applied."""
    height, width = size
    orientation = image.getexif().get(ORIENTATION, 1)
    out_w, out_h = (height, width) if orientation in SWAPS_AXES else (width, height)  # before the rotation
    full_w, full_h = image.size
    if use_draft:
        left, top, right, bottom = box
        image.draft("RGB", (math.ceil(full_w * out_w / (right - left)), math.ceil(full_h * out_h / (bottom - top))))
    sx, sy = image.size[0] / full_w, image.size[1] / full_h  # the decoded scale (1, 1/2, 1/4 or 1/8)
    image.load()
    image = to_rgb(image)
    crop = image.resize((out_w, out_h), Image.BILINEAR, box=(box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy))
    if orientation != 1:
        crop.getexif()[ORIENTATION] = orientation
        crop = ImageOps.exif_transpose(crop)
    return torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, h, w)
