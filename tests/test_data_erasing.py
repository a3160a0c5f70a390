"""Random erasing on the normalised batch, as timm's RandomErasing: boxes, their sizes, their fill."""

import pytest
import torch

from vit_finetune.data.config import RandomErasingConfig
from vit_finetune.data.erasing import random_erasing

SENTINEL = 7.0  # no normal draw of the fill comes near it


def erased_boxes(before: torch.Tensor, after: torch.Tensor) -> list[tuple[int, int, int, int] | None]:
    """(top, left, h, w) of the changed region of each image, checking that it is one filled rectangle."""
    boxes = []
    for changed in (after != before).any(0) if before.dim() == 3 else (after != before).any(1):
        if not changed.any():
            boxes.append(None)
            continue
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        top, left, bottom, right = rows[0].item(), cols[0].item(), rows[-1].item() + 1, cols[-1].item() + 1
        assert changed[top:bottom, left:right].all() and changed.sum() == (bottom - top) * (right - left)
        boxes.append((top, left, bottom - top, right - left))
    return boxes


@pytest.mark.parametrize("mode", ["const", "rand", "pixel"])
def test_each_erased_image_gets_one_box_of_timm_size_and_fill(mode):
    torch.manual_seed(0)
    cfg = RandomErasingConfig(p=1.0, mode=mode)
    before = torch.full((300, 3, 40, 30), SENTINEL)
    after = random_erasing(before.clone(), cfg)
    boxes = erased_boxes(before, after)
    assert all(box is not None for box in boxes)  # at these sizes a try always fits within 10
    for (top, left, h, w), image in zip(boxes, after):
        assert h < 40 and w < 30
        # h, w = round(sqrt(area * aspect)), round(sqrt(area / aspect)): area and aspect within rounding
        assert 0.02 * 1200 * 0.5 < h * w < (1200 / 3) * 1.5
        assert 0.3 / 1.5 < h / w < (1 / 0.3) * 1.5
        box = image[:, top : top + h, left : left + w]
        if mode == "const":
            assert box.eq(0).all()
        elif mode == "rand":
            assert (box == box[:, :1, :1]).all() and box[:, 0, 0].unique().numel() == 3
        else:
            assert box.unique().numel() > 0.99 * box.numel()  # a normal draw per value
    tops = torch.tensor([box[0] for box in boxes], dtype=torch.float64)
    assert tops.min() == 0 and tops.max() > 30  # positions spread over the whole range


def test_probability_and_count():
    torch.manual_seed(0)
    before = torch.full((4000, 3, 16, 16), SENTINEL)
    after = random_erasing(before.clone(), RandomErasingConfig(p=0.25, mode="const"))
    erased = (after != before).flatten(1).any(1).float().mean().item()
    assert 0.22 < erased < 0.28
    assert torch.equal(random_erasing(before.clone(), RandomErasingConfig(p=0.0)), before)


def test_several_boxes_share_the_area():
    """timm: 1..max_count boxes, each of area uniform(scale) * H * W / count."""
    torch.manual_seed(0)
    before = torch.full((2000, 3, 64, 64), SENTINEL)
    after = random_erasing(before.clone(), RandomErasingConfig(p=1.0, mode="const", max_count=3))
    erased_fraction = (after != before).any(1).flatten(1).float().mean(1)  # overlapping boxes count once
    assert erased_fraction.max() <= 1 / 3 + 0.05  # without the division 3 boxes could cover far more
    mean_single_box = (0.02 + 1 / 3) / 2
    assert 0.8 * mean_single_box < erased_fraction.mean() <= 1.02 * mean_single_box


def test_deterministic_with_a_generator_and_in_place():
    batch = torch.randn(16, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    cfg = RandomErasingConfig(p=0.5, mode="pixel")
    first = random_erasing(batch.clone(), cfg, torch.Generator().manual_seed(3))
    second = random_erasing(batch.clone(), cfg, torch.Generator().manual_seed(3))
    third = random_erasing(batch.clone(), cfg, torch.Generator().manual_seed(4))
    assert torch.equal(first, second) and not torch.equal(first, third)
    target = batch.clone()
    assert random_erasing(target, cfg, torch.Generator().manual_seed(3)) is target
