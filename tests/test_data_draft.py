"""Random-resized crops decoded with JPEG draft mode agree with a full decode + crop + resize."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from data_helpers import encode_image
from vit_finetune.data.augment import crop_box
from vit_finetune.data.draft import decode_crop, decode_random_crop
from vit_finetune.data.images import ImageFileError, open_image

SIZE = (96, 112)  # (h, w): not square, so a swapped axis would show


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour fields plus fine noise: what draft mode must not blur away."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return encode_image(photo_like(1200, 900), "JPEG")


def reference_crop(image: Image.Image, box, size) -> torch.Tensor:
    """The definition: decode everything, crop the box, resize it (PIL bilinear, antialiased)."""
    crop = image.resize((size[1], size[0]), Image.BILINEAR, box=box)
    return torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)


# (box, output size, mean, max |delta| allowed in grey levels). The draft scale is the smallest that covers the
# output: 1/4 and 1/2 for the 224-px crops (measured 0.3-0.5 mean, 2-3 max), 1/8 for the small output (a box
# average instead of the bilinear filter: measured 1.6-1.7 mean, 11-12 max on this noisy image), 1 for a box
# smaller than twice the output (bitwise equal).
CASES = [((0, 0, 1200, 900), (224, 224), 1.0, 6), ((150, 60, 1050, 840), (224, 224), 1.0, 6),
         ((300, 225, 700, 600), (224, 224), 0.0, 0), ((0, 0, 1200, 900), (96, 112), 2.5, 16)]


@pytest.mark.parametrize("box, size, mean, most", CASES)
def test_draft_decode_is_within_tolerance_of_full_decode(big_jpeg, box, size, mean, most):
    drafted = decode_crop(big_jpeg, "big.jpg", box, size).int()
    full = reference_crop(open_image(big_jpeg), box, size).int()
    difference = (drafted - full).abs().float()
    assert drafted.shape == (3, *size)
    assert difference.mean() <= mean and difference.max() <= most
    assert torch.equal(decode_crop(big_jpeg, "big.jpg", box, size, use_draft=False).int(), full)


def test_small_crops_and_png_decode_in_full():
    png = encode_image(photo_like(300, 200), "PNG")
    box = (10, 20, 210, 180)
    assert torch.equal(decode_crop(png, "a.png", box, SIZE), reference_crop(open_image(png), box, SIZE))


def test_random_crop_draws_the_torchvision_box_from_torch_rng(big_jpeg):
    torch.manual_seed(3)
    top, left, height, width = crop_box(900, 1200, (0.08, 1.0), (3 / 4, 4 / 3))
    torch.manual_seed(3)
    random = decode_random_crop(big_jpeg, "big.jpg", SIZE, (0.08, 1.0), (3 / 4, 4 / 3))
    assert torch.equal(random, decode_crop(big_jpeg, "big.jpg", (left, top, left + width, top + height), SIZE))


def test_exif_orientation_applied_after_the_crop():
    image = photo_like(400, 300)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 270 (camera held upright)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    upright = open_image(buffer.getvalue())  # 300 x 400 after the rotation
    drafted = decode_crop(buffer.getvalue(), "r.jpg", (0, 0, 400, 300), SIZE).int()
    expected = reference_crop(upright, (0, 0, 300, 400), SIZE).int()
    assert drafted.shape == (3, *SIZE) and (drafted - expected).abs().float().mean() <= 1.0


def test_bad_files_are_refused_naming_them():
    with pytest.raises(ImageFileError, match="broken.jpg: not an image"):
        decode_crop(b"not a jpeg", "broken.jpg", (0, 0, 1, 1), SIZE)
    truncated = encode_image(photo_like(200, 200), "JPEG")[:400]
    with pytest.raises(ImageFileError, match="cut.jpg: corrupt or truncated"):
        decode_random_crop(truncated, "cut.jpg", SIZE, (0.5, 1.0), (1.0, 1.0))
