"""Safe image opening and conversion of any PIL mode to 8-bit RGB.

`open_image` refuses, with one `ImageFileError` line naming the file and the reason: anything but a
regular file (a FIFO named `x.jpg` would block the reader forever; `open_regular_file` opens without
blocking and checks what it opened), formats outside `ALLOWED_FORMATS` (whatever the file extension
says), decompression bombs (declared size checked before decoding), and truncated or corrupt files
(pixels are decoded eagerly with `.load()`; `ImageFile.LOAD_TRUNCATED_IMAGES` is never set). EXIF
orientation is applied.

Mode rules of `to_rgb`: alpha (RGBA, LA, PA, palette with transparency) is composited on white;
grayscale, palette, CMYK, YCbCr, ... use PIL's conversion; 16-bit (`I;16*`) and 32-bit `I` are
scaled from the 0..65535 range to 0..255 (no saturation); float `F` is read as 0..1 when its maximum
is <= 1, else as 0..255, and clipped.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
from PIL import Image, ImageOps

from vit_finetune.typed import error_reason

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 89_478_485  # PIL's own bomb threshold (Image.MAX_IMAGE_PIXELS), not overridable by it
LARGE_IMAGE_PIXELS = 4096 * 4096  # above this, `open_image(..., reduce_for=...)` decodes at a reduced size
REDUCIBLE_MODES = ("L", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F")  # modes `Image.reduce` supports
ResizeTarget = Callable[[int, int], tuple[int, int]]  # (height, width) -> (h, w) after the resize step
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageFileError(ValueError):
    """An image file that cannot or must not be decoded; the message names the file and the reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def open_image(source: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_IMAGE_PIXELS,
               reduce_for: ResizeTarget | None = None) -> Image.Image:
    """Open, fully decode and convert an image file (path or encoded bytes) to an RGB PIL image.

    With `reduce_for` (the (h, w) a resize makes of an image of (height, width)), an image over
    `LARGE_IMAGE_PIXELS` is decoded at no less than twice that size per side, not at full size: a JPEG by
    DCT scaling (`draft`: the full size is never decoded), another format decoded and then shrunk by a whole
    factor (`reduce`, a box filter). Smaller images are decoded as they are.
    """
    with checked_image(source, name, max_pixels) as image:
        floor = reduced_side(image.size, reduce_for)
        if floor and image.format == "JPEG":
            image.draft(image.mode, (floor, floor))
        image.load()
        image = _reduced(image, min(image.size) // floor) if floor else image  # before anything copies it
        return to_rgb(ImageOps.exif_transpose(image))


@contextlib.contextmanager
def checked_image(source: str | Path | bytes, name: str | None = None,
                  max_pixels: int = MAX_IMAGE_PIXELS) -> Iterator[Image.Image]:
    """The opened, not yet decoded image (a path only if it is a regular file), its format and declared
    size checked; any error inside the block (decoding it, e.g. after `draft`) becomes an `ImageFileError`
    naming the file."""
    name = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    stream = io.BytesIO(source) if isinstance(source, bytes) else open_regular_file(source, name)
    try:
        with stream, Image.open(stream, formats=ALLOWED_FORMATS) as image:
            _check_size(image, max_pixels, name)
            yield image
    except ImageFileError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageFileError(name, f"not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})") from None
    except Image.DecompressionBombError as err:
        raise ImageFileError(name, f"decompression bomb refused ({err})") from None
    except FileNotFoundError:
        raise ImageFileError(name, "file not found") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise ImageFileError(name, f"corrupt or truncated image ({error_reason(err)})") from None


def reduced_side(size: tuple[int, int], reduce_for: ResizeTarget | None) -> int | None:
    """The shortest side to decode an image of `size` (w, h) at (twice the largest side its resize gives, in
    either EXIF orientation), or None to decode it at full size."""
    width, height = size
    if reduce_for is None or width * height <= LARGE_IMAGE_PIXELS:
        return None
    return 2 * max(*reduce_for(height, width), *reduce_for(width, height))


def _reduced(image: Image.Image, factor: int) -> Image.Image:
    """`image` shrunk by a whole `factor` (box filter); modes `reduce` cannot handle are made RGB first."""
    if factor < 2:
        return image
    return (image if image.mode in REDUCIBLE_MODES else to_rgb(image)).reduce(factor)


FILE_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
              stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}


def open_regular_file(path: str | Path, name: str | None = None) -> BinaryIO:
    """Open `path` for reading if it is a regular file (symlinks followed); else an `ImageFileError`.

    The file is opened non-blocking, so a FIFO without a writer cannot hang the caller, and its kind is
    read from the open descriptor, so it cannot change between the check and the read.
    """
    name = name or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageFileError(name, "file not found") from None
    except OSError as err:
        raise ImageFileError(name, f"cannot open ({err.strerror})") from None
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise ImageFileError(name, f"not a regular file ({FILE_KINDS.get(kind, 'of another kind')})")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _check_size(image: Image.Image, max_pixels: int, name: str) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageFileError(name, f"decompression bomb refused ({width}x{height} > {max_pixels} pixels)")
    if width == 0 or height == 0:
        raise ImageFileError(name, f"empty image ({width}x{height})")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha composited on white, 16-bit scaled, float clipped)."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        return _gray_array_to_rgb(np.asarray(image, dtype=np.float64) / 257.0)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        return _gray_array_to_rgb(values * 255.0 if values.max(initial=0.0) <= 1.0 else values)
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        return _composite_on_white(image.convert("RGBA"))
    return image.convert("RGB")


def _gray_array_to_rgb(values: np.ndarray) -> Image.Image:
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)  # (H, W)
    return Image.fromarray(gray, mode="L").convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
