"""Batched augmentation: every image gets its own crop / flip, drawn from torch's seeded RNG."""

import pytest
import torch
import torch.nn.functional as F

from vit_finetune.data.augment import augment_batch, random_padded_crop
from vit_finetune.data.config import AugmentConfig


def candidate_views(image: torch.Tensor, padding: int, flip: bool) -> list[torch.Tensor]:
    """Every (H, W) crop of `image` zero-padded by `padding`, and their mirror images if `flip`."""
    height, width = image.shape[-2:]
    padded = F.pad(image, (padding,) * 4)
    crops = [padded[:, top : top + height, left : left + width]
             for top in range(2 * padding + 1) for left in range(2 * padding + 1)]
    return crops + [crop.flip(-1) for crop in crops] if flip else crops


def matching_view(image: torch.Tensor, augmented: torch.Tensor, padding: int, flip: bool) -> int | None:
    views = candidate_views(image, padding, flip)
    return next((index for index, view in enumerate(views) if torch.equal(view, augmented)), None)


@pytest.mark.parametrize("flip", [False, True])
def test_each_image_gets_a_crop_of_itself(flip):
    torch.manual_seed(0)
    images = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is recognisable
    out = augment_batch(images, AugmentConfig(crop="random_padded", padding=2, horizontal_flip=flip))
    assert out.shape == images.shape and out.dtype == torch.uint8
    views = [matching_view(image, augmented, 2, flip) for image, augmented in zip(images, out)]
    assert None not in views
    assert len(set(views)) > 4  # offsets (and flips) are drawn per image, not once per batch


def test_offsets_cover_the_whole_padding_range():
    torch.manual_seed(0)
    image = torch.randint(1, 256, (1, 3, 6, 6), dtype=torch.uint8).expand(400, -1, -1, -1)
    out = random_padded_crop(image, 1)
    seen = {matching_view(image[0], crop, 1, False) for crop in out}
    assert seen == set(range(9))


def test_flip_mirrors_about_half_of_the_images():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (400, 3, 4, 4), dtype=torch.uint8)
    out = augment_batch(images, AugmentConfig(crop="none", horizontal_flip=True))
    flipped = [torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(out, images)]
    unchanged = [torch.equal(a, b) for a, b in zip(out, images)]
    assert all(f or u for f, u in zip(flipped, unchanged))
    assert 150 < sum(flipped) < 250


def test_same_seed_same_batch():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(augment_batch(images, AugmentConfig(crop="random_resized", scale=(0.3, 1.0))))
    assert torch.equal(*runs)
