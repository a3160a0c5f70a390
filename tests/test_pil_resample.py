"""Pillow's resampling reproduced on tensors: bit for bit against `Image.resize` itself."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from vit_finetune.data import pil_resample
from vit_finetune.data.preprocess import pil_resizes_height_first

PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def random_cases(count: int, seed: int):
    """(image, target size) pairs: noise and blurred noise (smooth images round differently), 1 to 300 px."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = (int(v) for v in rng.integers(1, 300, 2))
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        if index % 2:
            image = image.filter(ImageFilter.GaussianBlur(2))
        yield image, tuple(int(v) for v in rng.integers(1, 400, 2))


def tensor_resize(image: Image.Image, size: tuple[int, int], resample: str) -> np.ndarray:
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]  # (1, 3, H, W)
    first = pil_resizes_height_first(tuple(pixels.shape[-2:]), size)
    return pil_resample.resize(pixels, size, resample, first)[0].permute(1, 2, 0).numpy()  # (h, w, 3)


@pytest.mark.parametrize("resample", ["bicubic", "bilinear"])
def test_resize_equals_pillow_bit_for_bit(resample):
    for image, (height, width) in random_cases(60, seed=len(resample)):
        expected = np.asarray(image.resize((width, height), PIL_FILTERS[resample]))
        np.testing.assert_array_equal(tensor_resize(image, (height, width), resample), expected)


def test_weights_of_each_output_sum_to_one_in_fixed_point():
    """Normalised taps, rounded one by one: each row sums to 2**22 up to the rounding of its taps."""
    _, weights = pil_resample.pass_weights(500, 224, "bicubic")
    sums = weights.sum(1)
    assert (sums - (1 << pil_resample.PRECISION_BITS)).abs().max() <= weights.shape[1]


def test_a_batch_resizes_each_image_as_alone():
    images = torch.randint(0, 256, (3, 3, 40, 70), dtype=torch.uint8)
    together = pil_resample.resize(images, (31, 50), "bicubic", height_first=False)
    alone = torch.cat([pil_resample.resize(image[None], (31, 50), "bicubic", height_first=False) for image in images])
    assert torch.equal(together, alone)
