"""RandAugment / TrivialAugmentWide / AugMix: policy strings, the op spaces, and each image's result
against the Pillow calls timm (`timm/data/auto_augment.py`) and torchvision
(`TrivialAugmentWide`) make, written out here from their definitions.

Tolerance: exact, except bilinear resampling (RandAugment's geometric ops): at most 1 grey level on
at most 6 % of the pixels (see test_data_image_ops.py).
"""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from vit_finetune.data import auto_augment as aa
from vit_finetune.data.augment import augment_batch
from vit_finetune.data.config import AugmentConfig, ColorJitterConfig

TIMM_FILL = (128, 128, 128)


def small_images(count: int, size: int = 12, seed: int = 0) -> list[Image.Image]:
    """Smooth coloured gradients with noise: every op changes them visibly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    images = []
    for _ in range(count):
        slope = rng.uniform(2, 18, 3)
        base = np.stack([x * slope[0], y * slope[1], (x + y) * slope[2] / 2], -1) + rng.integers(0, 60, (size, size, 3))
        images.append(Image.fromarray(np.clip(base + rng.integers(0, 40, 3), 0, 255).astype(np.uint8)))
    return images


def to_batch(images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in images])


def close(ours: torch.Tensor, reference: Image.Image, bilinear: bool) -> bool:
    diff = (ours.int() - torch.from_numpy(np.array(reference)).permute(2, 0, 1).int()).abs()
    if not bilinear:
        return bool((diff == 0).all())
    return diff.max().item() <= 1 and (diff > 0).float().mean().item() <= 0.06


# ---- timm's definitions, written out as the PIL calls timm makes --------------------------------


def _posterize(image, bits):
    return Image.new("RGB", image.size, 0) if bits <= 0 else image if bits >= 8 else ImageOps.posterize(image, bits)


def _affine(image, data):
    return image.transform(image.size, Image.AFFINE, data, resample=Image.BILINEAR, fillcolor=TIMM_FILL)


def timm_op(image: Image.Image, name: str, level: float, sign: int) -> Image.Image:
    """timm's AugmentOp(name) at magnitude `level` with `_randomly_negate` giving `sign` (bilinear)."""
    f = level / 10
    width, height = image.size
    enhance = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
               "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}
    if name in enhance:
        return enhance[name](image).enhance(f * 1.8 + 0.1)
    if name.removesuffix("Increasing") in enhance:
        return enhance[name.removesuffix("Increasing")](image).enhance(max(0.1, 1.0 + sign * f * 0.9))
    return {
        "AutoContrast": lambda: ImageOps.autocontrast(image),
        "Equalize": lambda: ImageOps.equalize(image),
        "Invert": lambda: ImageOps.invert(image),
        "Rotate": lambda: image.rotate(sign * f * 30, resample=Image.BILINEAR, fillcolor=TIMM_FILL),
        "Posterize": lambda: _posterize(image, int(f * 4)),
        "PosterizeIncreasing": lambda: _posterize(image, 4 - int(f * 4)),
        "Solarize": lambda: ImageOps.solarize(image, min(256, int(f * 256))),
        "SolarizeIncreasing": lambda: ImageOps.solarize(image, 256 - min(256, int(f * 256))),
        "SolarizeAdd": lambda: image.point([min(255, i + min(128, int(f * 110))) if i < 128 else i for i in range(256)] * 3),
        "ShearX": lambda: _affine(image, (1, sign * f * 0.3, 0, 0, 1, 0)),
        "ShearY": lambda: _affine(image, (1, 0, 0, sign * f * 0.3, 1, 0)),
        "TranslateXRel": lambda: _affine(image, (1, 0, sign * f * 0.45 * width, 0, 1, 0)),
        "TranslateYRel": lambda: _affine(image, (1, 0, 0, 0, 1, sign * f * 0.45 * height)),
    }[name]()


def matching_ops(output: torch.Tensor, image: Image.Image, names: tuple[str, ...], level: float) -> set[str]:
    return {name for name in names for sign in (1, -1) if close(output, timm_op(image, name, level, sign), bilinear=True)}


@pytest.mark.parametrize("increasing", [False, True])
def test_each_image_gets_one_timm_op_at_the_magnitude(increasing):
    torch.manual_seed(0)
    images = small_images(48)
    ops = aa.RAND_INCREASING_OPS if increasing else aa.RAND_OPS
    policy = aa.RandAugmentPolicy(num_layers=1, magnitude=7, prob=1.0, ops=ops)
    out = aa.rand_augment(to_batch(images), policy)
    matches = [matching_ops(o, image, ops, 7) for o, image in zip(out, images)]
    assert all(matches), "every image equals timm's result of one of the ops"
    assert len(set().union(*matches)) >= 12  # ops are drawn per image


def test_magnitude_zero_with_identity_like_ops_is_identity():
    identity_at_zero = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "SolarizeIncreasing",
                        "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                        "SharpnessIncreasing")
    images = to_batch(small_images(32, size=16))
    torch.manual_seed(0)
    policy = aa.RandAugmentPolicy(num_layers=3, magnitude=0, prob=1.0, ops=identity_at_zero)
    assert torch.equal(aa.rand_augment(images, policy), images)
    # timm's plain Posterize keeps int(m / 10 * 4) bits, so magnitude 0 is black, not identity
    black = aa.rand_augment(images, aa.RandAugmentPolicy(num_layers=1, magnitude=0, prob=1.0, ops=("Posterize",)))
    assert black.eq(0).all()


def test_ops_apply_with_probability_p():
    torch.manual_seed(0)
    images = to_batch(small_images(400, size=6))
    out = aa.rand_augment(images, aa.RandAugmentPolicy(num_layers=1, magnitude=9, prob=0.3, ops=("Invert",)))
    inverted = (out == 255 - images).flatten(1).all(1)
    assert ((out == images).flatten(1).all(1) | inverted).all()
    assert 0.24 < inverted.float().mean().item() < 0.36


def test_magnitude_noise_and_clipping_follow_timm():
    torch.manual_seed(0)
    images = torch.zeros(20000, 3, 2, 2, dtype=torch.uint8)
    def levels(magnitude, std, maximum):
        _, args = aa._draw_timm_ops(images, ("Rotate",), magnitude, std, maximum)
        return args.abs() / 3.0  # Rotate: level / 10 * 30 degrees
    noisy = levels(5, 0.5, 10)
    assert abs(noisy.mean().item() - 5) < 0.02 and abs(noisy.std().item() - 0.5) < 0.02
    clipped = levels(9, 2.0, 10)
    assert clipped.max().item() == pytest.approx(10) and (clipped == 10).float().mean().item() > 0.25
    uniform = levels(9, math.inf, 10)
    assert uniform.min().item() < 0.05 and 8.95 < uniform.max().item() <= 9 and abs(uniform.mean().item() - 4.5) < 0.1
    assert levels(14, 0, 20).eq(14).all()  # mmax raises the clip above 10


# ---- TrivialAugmentWide -------------------------------------------------------------------------


def test_trivial_augment_space_is_torchvisions():
    bins = np.arange(31)
    expected = {
        "Identity": None, "ShearX": np.linspace(0, 0.99, 31), "ShearY": np.linspace(0, 0.99, 31),
        "TranslateX": np.linspace(0, 32, 31), "TranslateY": np.linspace(0, 32, 31), "Rotate": np.linspace(0, 135, 31),
        "Brightness": np.linspace(0, 0.99, 31), "Color": np.linspace(0, 0.99, 31), "Contrast": np.linspace(0, 0.99, 31),
        "Sharpness": np.linspace(0, 0.99, 31), "Posterize": 8 - np.round(bins / 5), "Solarize": np.linspace(255, 0, 31),
        "AutoContrast": None, "Equalize": None,
    }
    signed = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}
    space = aa.trivial_magnitudes()
    assert list(space) == list(expected)
    for op, values in expected.items():
        assert space[op][1] == (op in signed)
        assert (space[op][0] is None) if values is None else np.allclose(space[op][0], values, atol=1e-5)


def torchvision_op(image: Image.Image, op: str, magnitude: float) -> Image.Image:
    """torchvision's `_apply_op` on a PIL image, with TrivialAugmentWide's defaults (NEAREST, fill 0)."""
    enhance = {"Brightness": ImageEnhance.Brightness, "Color": ImageEnhance.Color,
               "Contrast": ImageEnhance.Contrast, "Sharpness": ImageEnhance.Sharpness}
    if op in enhance:
        return enhance[op](image).enhance(1.0 + magnitude)
    affine = {"ShearX": (1, magnitude, 0, 0, 1, 0), "ShearY": (1, 0, 0, magnitude, 1, 0),
              "TranslateX": (1, 0, -int(magnitude), 0, 1, 0), "TranslateY": (1, 0, 0, 0, 1, -int(magnitude))}
    if op in affine:
        return image.transform(image.size, Image.AFFINE, affine[op], resample=Image.NEAREST, fillcolor=(0, 0, 0))
    return {"Identity": lambda: image, "Rotate": lambda: image.rotate(magnitude, resample=Image.NEAREST, fillcolor=(0, 0, 0)),
            "Posterize": lambda: ImageOps.posterize(image, int(magnitude)), "Solarize": lambda: ImageOps.solarize(image, magnitude),
            "AutoContrast": lambda: ImageOps.autocontrast(image), "Equalize": lambda: ImageOps.equalize(image)}[op]()


def test_trivial_augment_gives_one_torchvision_op_per_image():
    torch.manual_seed(0)
    images = small_images(24, size=10)
    out = aa.trivial_augment_wide(to_batch(images))
    space = aa.trivial_magnitudes()
    seen = set()
    for output, image in zip(out, images):
        found = {op for op, (values, signed) in space.items()
                 for value in ([0.0] if values is None else values.tolist())
                 for sign in ((1, -1) if signed else (1,))
                 if close(output, torchvision_op(image, op, sign * value), bilinear=False)}
        assert found, "every image equals torchvision's result of one op at one bin"
        seen |= found
    assert len(seen) >= 8


# ---- AugMix ----------------------------------------------------------------------------------


def test_augmix_mixes_augmented_chains_with_the_original():
    images = to_batch(small_images(16))
    torch.manual_seed(0)
    out = aa.augmix(images, aa.parse_auto_augment("augmix-m3-w3-d-1"))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert (out != images).flatten(1).any(1).float().mean() > 0.8
    torch.manual_seed(0)
    assert torch.equal(aa.augmix(images, aa.parse_auto_augment("augmix-m3-w3-d-1")), out)


# ---- policy strings --------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("rand-m9-mstd0.5", aa.RandAugmentPolicy(magnitude=9, magnitude_std=0.5)),
    ("rand-m9-mstd0.5-inc1", aa.RandAugmentPolicy(magnitude=9, magnitude_std=0.5, ops=aa.RAND_INCREASING_OPS)),
    ("rand-n3-m10-p0.8-mmax15", aa.RandAugmentPolicy(num_layers=3, magnitude=10, prob=0.8, magnitude_max=15)),
    ("rand-mstd101", aa.RandAugmentPolicy(magnitude_std=math.inf)),
    ("rand-inc0-m5", aa.RandAugmentPolicy(magnitude=5)),
    ("rand", aa.RandAugmentPolicy()),
    ("trivial", aa.TrivialAugmentPolicy()),
    ("augmix-m3-w3-d-1", aa.AugMixPolicy(magnitude=3, width=3, depth=-1)),
    ("augmix-m5-w4-d2-a0.5-mstd0", aa.AugMixPolicy(magnitude=5, width=4, depth=2, alpha=0.5, magnitude_std=0)),
])
def test_policy_strings_parse_as_timm_reads_them(text, expected):
    assert aa.parse_auto_augment(text) == expected


@pytest.mark.parametrize("text,culprit", [
    ("rand-x9", "'x9'"), ("rand-m9.5", "'m9.5'"), ("rand-m9-", "'m9-'"), ("rand-p1.5", "prob=1.5"),
    ("rand-mstd-1", "magnitude_std=-1"), ("rand-tweights", "'tweights'"), ("v0", "'v0'"), ("trivial-m3", "'trivial'"),
    ("augmix-b1", "'b1'"), ("augmix-d0", "depth=0"), ("augmix-w0", "width=0"), ("Rand-m9", "'Rand'"),
])
def test_bad_policy_strings_name_the_bad_part(text, culprit):
    with pytest.raises(ValueError, match=repr(text)) as caught:
        aa.parse_auto_augment(text)
    assert culprit in str(caught.value)


# ---- the augmentation pipeline ---------------------------------------------------------------


STRONG = AugmentConfig(crop="random_padded", padding=2, auto_augment="rand-m9-mstd0.5",
                       color_jitter=ColorJitterConfig(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1))


@pytest.mark.parametrize("cfg", [STRONG, AugmentConfig(crop="none", auto_augment="trivial"),
                                 AugmentConfig(crop="none", horizontal_flip=False, auto_augment="augmix-m3-w2")])
def test_augmented_pipeline_is_deterministic_under_a_seed_and_differs_across_seeds(cfg):
    images = to_batch(small_images(32, size=16))
    runs = {}
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.setdefault(seed, []).append(augment_batch(images, cfg))
    assert torch.equal(*runs[1])
    assert not torch.equal(runs[1][0], runs[2][0])
    assert runs[1][0].shape == images.shape and runs[1][0].dtype == torch.uint8
