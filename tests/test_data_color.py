"""Colour jitter: torchvision's ColorJitter (random order, uniform factors) on its PIL path, per image."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from vit_finetune.data.color import color_jitter, jitter_factors
from vit_finetune.data.config import ColorJitterConfig


def images(count: int, size: int = 10) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def to_batch(pil_images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in pil_images])


def pil_hue(image: Image.Image, factor: float) -> Image.Image:
    """torchvision.transforms.functional_pil.adjust_hue."""
    h, s, v = image.convert("HSV").split()
    hue = np.array(h, dtype=np.uint8)
    with np.errstate(over="ignore"):
        hue += np.array(factor * 255).astype(np.int64).astype(np.uint8)  # numpy's float -> uint8 cast wraps
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB")


PIL_ADJUST = [lambda im, f: ImageEnhance.Brightness(im).enhance(f), lambda im, f: ImageEnhance.Contrast(im).enhance(f),
              lambda im, f: ImageEnhance.Color(im).enhance(f), pil_hue]


@pytest.mark.parametrize("cfg", [ColorJitterConfig(0.4, 0.4, 0.4, 0.1), ColorJitterConfig(brightness=0.8),
                                 ColorJitterConfig(hue=0.5), ColorJitterConfig(0.2, 0.0, 0.6, 0.0)])
def test_each_image_gets_torchvision_adjustments_in_its_own_order(cfg):
    pil_images = images(24)
    torch.manual_seed(5)
    out = color_jitter(to_batch(pil_images), cfg)
    torch.manual_seed(5)  # the same draws, in color_jitter's order: a permutation per image, then the factors
    order = torch.argsort(torch.rand(len(pil_images), 4), dim=1)
    factors = jitter_factors(cfg, len(pil_images))
    strengths = (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    orders = set()
    for i, image in enumerate(pil_images):
        for which in order[i].tolist():
            if strengths[which] > 0:
                image = PIL_ADJUST[which](image, factors[which, i].item())
        assert torch.equal(out[i], to_batch([image])[0])
        orders.add(tuple(order[i].tolist()))
    assert len(orders) > 10


def test_factors_are_uniform_in_torchvision_ranges():
    torch.manual_seed(0)
    factors = jitter_factors(ColorJitterConfig(brightness=1.5, contrast=0.4, saturation=0.0, hue=0.2), 20000)
    low = torch.tensor([0.0, 0.6, 1.0, -0.2], dtype=torch.float64)  # max(0, 1 - v) .. 1 + v; hue -h .. h
    high = torch.tensor([2.5, 1.4, 1.0, 0.2], dtype=torch.float64)
    assert (factors >= low[:, None]).all() and (factors <= high[:, None]).all()
    assert torch.allclose(factors.mean(1), (low + high) / 2, atol=0.02)


def test_no_strength_no_change():
    batch = to_batch(images(4))
    assert torch.equal(color_jitter(batch, ColorJitterConfig()), batch)
