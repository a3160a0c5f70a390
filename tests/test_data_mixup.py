"""Mixup / CutMix with soft targets (timm's Mixup); their loss is tested in test_losses.py."""

import pytest
import torch

from vit_finetune.data.batch_augment import augment_train_batch
from vit_finetune.data.config import AugmentConfig, RandomErasingConfig
from vit_finetune.data.mixup import mix_batch, mixup_targets

CLASSES = 10


def batch(count: int = 32, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel names its image (value = index), so mixed pixels reveal their sources."""
    pixels = torch.arange(count, dtype=torch.float32).view(count, 1, 1, 1).expand(count, 3, size, size).contiguous()
    labels = torch.randint(0, CLASSES, (count,), generator=torch.Generator().manual_seed(seed))
    return pixels, labels


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def lam_of_targets(targets: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Recover lam from soft targets: the weight on the image's own label (labels differ from the partner's)."""
    off = smoothing / CLASSES
    own = targets.gather(1, labels.view(-1, 1))[:, 0]
    partner = targets.gather(1, labels.flip(0).view(-1, 1))[:, 0]
    return torch.where(labels == labels.flip(0), torch.ones_like(own), (own - off) / (own + partner - 2 * off))


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("alphas", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_soft_targets_sum_to_one_and_weigh_each_source_by_its_share(mode, alphas):
    pixels, labels = batch()
    cfg = AugmentConfig(mixup_alpha=alphas[0], cutmix_alpha=alphas[1], mixup_mode=mode, label_smoothing=0.1)
    mixed, targets = mix_batch(pixels, labels, CLASSES, cfg, generator())
    assert targets.shape == (32, CLASSES) and targets.dtype == torch.float32
    assert torch.allclose(targets.sum(1), torch.ones(32), atol=1e-6) and (targets > 0).all()
    own_share = (mixed == pixels).float().mean(dim=(1, 2, 3))
    partner, lams = pixels.flip(0), lam_of_targets(targets, labels, 0.1)
    for i, lam in enumerate(lams):
        if labels[i] == labels[31 - i]:
            continue  # lam cannot be read from the targets
        if torch.allclose(mixed[i], pixels[i] * lam + partner[i] * (1 - lam), atol=1e-4):
            continue  # mixup (or no mix): lam * x + (1 - lam) * partner
        assert own_share[i].item() == pytest.approx(lam.item(), abs=1e-6)  # cutmix: lam = unpasted share
        assert ((mixed[i] == pixels[i]) | (mixed[i] == partner[i])).all()


def test_cutmix_box_area_matches_corrected_lam():
    """timm's correct_lam: lam = 1 - box area / image area, after clipping the box to the image."""
    pixels, labels = batch(64, size=20)
    cfg = AugmentConfig(cutmix_alpha=1.0, mixup_mode="elem")
    mixed, targets = mix_batch(pixels, labels, CLASSES, cfg, generator(1))
    lam = lam_of_targets(targets, labels, 0.0)
    pasted = (mixed != pixels).all(1)  # (B, H, W): pixels taken from the partner
    for i in range(64):
        if labels[i] == labels[63 - i]:
            continue
        assert 1 - pasted[i].float().mean().item() == pytest.approx(lam[i].item(), abs=1e-6)
        if pasted[i].any():  # one rectangle
            rows, cols = pasted[i].any(1).nonzero().flatten(), pasted[i].any(0).nonzero().flatten()
            assert pasted[i].sum() == len(rows) * len(cols) and rows.diff().eq(1).all() and cols.diff().eq(1).all()
    readable = labels != labels.flip(0)
    assert (lam[readable] < 1).float().mean() > 0.8  # near-1 lams cut an empty box: lam corrected to 1


def test_batch_mode_draws_once_and_pair_mode_mirrors():
    pixels, labels = batch(16)
    _, once = mix_batch(pixels, labels, CLASSES, AugmentConfig(mixup_alpha=1.0), generator())
    lam = lam_of_targets(once, labels, 0.0)[labels != labels.flip(0)]
    assert torch.allclose(lam, torch.full_like(lam, lam[0].item()), atol=1e-6) and lam[0] < 1
    mixed, _ = mix_batch(pixels, labels, CLASSES, AugmentConfig(cutmix_alpha=1.0, mixup_mode="pair"), generator())
    swapped = (mixed != pixels).all(1)
    assert torch.equal(swapped, swapped.flip(0))  # image i and image B-1-i trade the same box


def test_mixup_is_timm_formula_and_prob_zero_leaves_batch_alone():
    pixels, labels = batch(8)
    pixels = pixels + torch.randn_like(pixels)
    mixed, targets = mix_batch(pixels, labels, CLASSES, AugmentConfig(mixup_alpha=0.4), generator(2))
    lam = lam_of_targets(targets, labels, 0.0)
    i = int((labels != labels.flip(0)).nonzero()[0])
    assert torch.allclose(mixed, pixels * lam[i] + pixels.flip(0) * (1 - lam[i]), atol=1e-5)
    unmixed, one_hot = mix_batch(pixels, labels, CLASSES, AugmentConfig(mixup_alpha=0.4, mixup_prob=0.0), generator())
    assert torch.equal(unmixed, pixels) and torch.equal(one_hot, torch.nn.functional.one_hot(labels, CLASSES).float())


def test_label_smoothing_values_are_timms():
    labels = torch.tensor([3, 1])
    targets = mixup_targets(labels, 5, torch.tensor(1.0), smoothing=0.1)
    expected = torch.full((2, 5), 0.02)
    expected[0, 3] = expected[1, 1] = 0.92  # on = 1 - s + s / K, off = s / K
    assert torch.allclose(targets, expected)


def test_inputs_unchanged_and_generator_determines_the_draws():
    pixels, labels = batch(8)
    before = pixels.clone()
    cfg = AugmentConfig(mixup_alpha=0.8, cutmix_alpha=1.0)
    first = mix_batch(pixels, labels, CLASSES, cfg, generator(5))
    second = mix_batch(pixels, labels, CLASSES, cfg, generator(5))
    assert torch.equal(pixels, before)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    draws = {tuple(mix_batch(pixels, labels, CLASSES, cfg, generator(s))[1][0].tolist()) for s in range(6)}
    assert len(draws) > 3


def test_train_batch_erases_then_mixes_and_returns_soft_labels():
    pixels, labels = batch(16)
    cfg = AugmentConfig(random_erasing=RandomErasingConfig(p=1.0, mode="const"), cutmix_alpha=1.0)
    out = augment_train_batch({"pixel_values": pixels.clone(), "labels": labels}, CLASSES, cfg, generator())
    assert out["labels"].shape == (16, CLASSES) and (out["pixel_values"] == 0).any()
    plain = augment_train_batch({"pixel_values": pixels.clone(), "labels": labels}, CLASSES, AugmentConfig(), generator())
    assert torch.equal(plain["labels"], labels) and torch.equal(plain["pixel_values"], pixels)
