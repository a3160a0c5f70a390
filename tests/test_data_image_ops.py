"""Batched image ops against Pillow, the reference definition timm's and torchvision's PIL paths call.

Tolerance: exact (bit for bit) for every op except bilinear resampling, which Pillow computes in
float64 and we in one float32 `grid_sample`: where the exact value is a whole number the two may
truncate to neighbouring grey levels, so at most 1 grey level on at most 6 % of the pixels (measured:
up to 3 % for fractional translations of noise, under 1 % for rotations of smooth images).
"""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from vit_finetune.data import image_ops as ops

FILL = (128, 128, 128)


def reference_images() -> list[Image.Image]:
    """Fixed RGB test images: noise, a smooth gradient with noise, low contrast, flat, two-valued."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    y, x = np.mgrid[0:24, 0:24]
    gradient = np.stack([x * 10, y * 9, (x + y) * 5], -1) + rng.integers(0, 20, (24, 24, 3))
    low_contrast = rng.integers(60, 141, (16, 16, 3))
    flat = np.full((8, 12, 3), (200, 40, 90))
    two_valued = np.where(rng.random((10, 10, 1)) < 0.3, 30, 220).repeat(3, -1)
    arrays = [noise, gradient, low_contrast, flat, two_valued]
    return [Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)) for a in arrays]


def to_batch(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8


def assert_matches(ours: torch.Tensor, reference: Image.Image, max_diff: int = 0, max_fraction: float = 0.0) -> None:
    diff = (ours[0].int() - to_batch(reference)[0].int()).abs()
    assert ours.dtype == torch.uint8 and diff.max().item() <= max_diff
    assert (diff > 0).float().mean().item() <= max_fraction


def one(value: float) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.float64)


IMAGES = reference_images()


@pytest.mark.parametrize("image", IMAGES)
def test_point_ops_match_imageops(image):
    batch = to_batch(image)
    assert_matches(ops.apply_lut(batch, ops.invert_lut(1)), ImageOps.invert(image))
    assert_matches(ops.apply_lut(batch, ops.autocontrast_lut(batch)), ImageOps.autocontrast(image))
    assert_matches(ops.apply_lut(batch, ops.equalize_lut(batch)), ImageOps.equalize(image))
    for bits in (1, 2, 4, 7, 8):
        assert_matches(ops.apply_lut(batch, ops.posterize_lut(one(bits))), ImageOps.posterize(image, bits))
    for threshold in (0, 77, 128, 200.5, 255, 256):
        assert_matches(ops.apply_lut(batch, ops.solarize_lut(one(threshold))), ImageOps.solarize(image, threshold))


def test_posterize_to_zero_bits_is_black_and_solarize_add_follows_timm():
    """Pillow >= 10 refuses 0 bits; the mask formula gives black. timm's solarize_add: +add below 128, capped."""
    batch = to_batch(IMAGES[0])
    assert ops.apply_lut(batch, ops.posterize_lut(one(0))).eq(0).all()
    for add in (0, 37, 110):
        expected = np.array(IMAGES[0]).astype(int)
        expected = np.where(expected < 128, np.minimum(expected + add, 255), expected)
        out = ops.apply_lut(batch, ops.solarize_add_lut(one(add)))[0].permute(1, 2, 0).numpy()
        assert np.array_equal(out, expected)


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("factor", [0.0, 0.1, 0.5, 1.0, 1.37, 1.9, 3.0])
def test_enhance_ops_match_imageenhance(image, factor):
    batch = to_batch(image)
    assert_matches(ops.adjust_brightness(batch, one(factor)), ImageEnhance.Brightness(image).enhance(factor))
    assert_matches(ops.adjust_saturation(batch, one(factor)), ImageEnhance.Color(image).enhance(factor))
    assert_matches(ops.adjust_contrast(batch, one(factor)), ImageEnhance.Contrast(image).enhance(factor))
    assert_matches(ops.adjust_sharpness(batch, one(factor)), ImageEnhance.Sharpness(image).enhance(factor))


@pytest.mark.parametrize("image", IMAGES)
def test_hsv_and_hue_match_pillow_and_torchvision_pil_path(image):
    batch = to_batch(image)
    assert_matches(ops.rgb_to_hsv(batch), image.convert("HSV"))
    assert_matches(ops.hsv_to_rgb(batch), Image.merge("HSV", image.split()).convert("RGB"))
    for hue in (-0.5, -0.1, 0.03, 0.25, 0.5):  # torchvision.transforms.functional_pil.adjust_hue
        h, s, v = image.convert("HSV").split()
        shifted = np.array(h, dtype=np.uint8)
        with np.errstate(over="ignore"):
            shifted += np.array(hue * 255).astype(np.int64).astype(np.uint8)
        reference = Image.merge("HSV", (Image.fromarray(shifted, "L"), s, v)).convert("RGB")
        assert_matches(ops.adjust_hue(batch, one(hue)), reference)


AFFINES = [("rotate", angle) for angle in (-30, -7.3, 0.0, 12.5, 30, 90, 135)] + \
          [(kind, value) for kind in ("shear_x", "shear_y") for value in (-0.3, 0.13, 0.99)] + \
          [(kind, value) for kind in ("translate_x", "translate_y") for value in (-14.4, -3, 5.7, 12)]


def pil_affine(image: Image.Image, kind: str, value: float, resample) -> Image.Image:
    """The calls timm makes (`rotate`, `shear_x`, `translate_x_abs`, ...), with fill (128, 128, 128)."""
    if kind == "rotate":
        return image.rotate(value, resample=resample, fillcolor=FILL)
    data = {"shear_x": (1, value, 0, 0, 1, 0), "shear_y": (1, 0, 0, value, 1, 0),
            "translate_x": (1, 0, value, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, value)}[kind]
    return image.transform(image.size, Image.AFFINE, data, resample=resample, fillcolor=FILL)


def our_matrix(kind: str, value: float, height: int, width: int) -> torch.Tensor:
    if kind == "rotate":
        return ops.rotate_matrix(one(value), height, width)
    maker = ops.shear_matrix if kind.startswith("shear") else ops.translate_matrix
    return maker(one(value), kind[-1])


@pytest.mark.parametrize("kind,value", AFFINES)
@pytest.mark.parametrize("image", IMAGES[:3])
def test_nearest_affine_is_exact(image, kind, value):
    batch = to_batch(image)
    out = ops.affine(batch, our_matrix(kind, value, *batch.shape[-2:]), "nearest", FILL)
    assert_matches(out, pil_affine(image, kind, value, Image.NEAREST))


@pytest.mark.parametrize("kind,value", AFFINES)
@pytest.mark.parametrize("image", IMAGES[:3])
def test_bilinear_affine_within_one_grey_level(image, kind, value):
    batch = to_batch(image)
    out = ops.affine(batch, our_matrix(kind, value, *batch.shape[-2:]), "bilinear", FILL)
    assert_matches(out, pil_affine(image, kind, value, Image.BILINEAR), max_diff=1, max_fraction=0.06)


def test_ops_treat_each_image_of_a_batch_with_its_own_argument():
    images = [image.resize((16, 16)) for image in IMAGES[:3]]
    batch = torch.cat([to_batch(image) for image in images])
    factors = torch.tensor([0.3, 1.0, 1.8], dtype=torch.float64)
    angles = torch.tensor([-20.0, 0.0, 45.0], dtype=torch.float64)
    contrast = ops.adjust_contrast(batch, factors)
    rotated = ops.affine(batch, ops.rotate_matrix(angles, 16, 16), "nearest", FILL)
    for i, image in enumerate(images):
        assert_matches(contrast[i : i + 1], ImageEnhance.Contrast(image).enhance(factors[i].item()))
        assert_matches(rotated[i : i + 1], image.rotate(angles[i].item(), resample=Image.NEAREST, fillcolor=FILL))
