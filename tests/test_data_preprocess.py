"""PreprocessConfig I/O and the batched path's equivalence with transformers' ViTImageProcessor."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from data_helpers import CIFAR10, needs_cifar10
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data import fast_resize
from vit_finetune.data.fast_resize import row_stretch_factor
from vit_finetune.data.images import open_image
from vit_finetune.data.preprocess import PreprocessConfig, pil_to_pixels, preprocess_batch, preprocess_images



def hf_processor(**kwargs):
    """The reference: transformers' ViT processor (PIL backend here: no torchvision)."""
    from transformers import ViTImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ViTImageProcessor(**kwargs)


def hf_pixels(processor, images) -> torch.Tensor:
    return torch.as_tensor(np.stack(processor(images, return_tensors="np")["pixel_values"]))


def random_images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def test_defaults_are_vit_processor_defaults():
    reference = hf_processor().to_dict()
    ours = PreprocessConfig().to_processor_dict()
    for key in ("size", "resample", "do_resize", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std"):
        assert json.loads(json.dumps(ours[key])) == json.loads(json.dumps(reference[key])), key


def test_save_pretrained_loads_in_auto_image_processor(tmp_path):
    from transformers import AutoImageProcessor

    cfg = PreprocessConfig(height=160, width=128, resample="bicubic", image_mean=(0.1, 0.2, 0.3), image_std=(0.4, 0.5, 0.6))
    cfg.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor).__name__ in ("ViTImageProcessor", "ViTImageProcessorPil")
    assert processor.size["height"] == 160 and processor.size["width"] == 128 and int(processor.resample) == 3
    assert list(processor.image_mean) == [0.1, 0.2, 0.3] and list(processor.image_std) == [0.4, 0.5, 0.6]
    assert PreprocessConfig.from_pretrained(tmp_path) == cfg


def test_from_pretrained_reads_checkpoint_settings(tmp_path):
    processor = {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}, "do_center_crop": True,
                 "resample": 3, "image_mean": [0.48, 0.46, 0.41], "image_std": [0.27, 0.26, 0.28], "rescale_factor": 0.5}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    cfg = PreprocessConfig.from_pretrained(tmp_path)
    assert (cfg.shortest_edge, cfg.crop_height, cfg.resample, cfg.rescale_factor) == (256, 224, "bicubic", 0.5)
    assert cfg.image_mean == (0.48, 0.46, 0.41) and cfg.output_size(100, 300) == (224, 224)


def test_invalid_settings_name_the_field():
    with pytest.raises(ValueError, match="resample"):
        PreprocessConfig(resample="lanczos")
    with pytest.raises(ValueError, match="height/width"):
        PreprocessConfig(shortest_edge=224)
    with pytest.raises(ValueError, match="resample"):
        PreprocessConfig.from_dict({"resample": 1})


@pytest.mark.parametrize("resample, target", [("bilinear", (64, 48)), ("bicubic", (64, 48)), ("nearest", (64, 96))])
@pytest.mark.parametrize("source", [(32, 32), (300, 260)])
def test_matches_vit_processor_on_random_images(resample, target, source):
    """Up- and down-sampling; nearest only where no pixel centre falls on a tie (PIL rounds ties in fixed point)."""
    images = random_images([source] * 4)
    cfg = PreprocessConfig(height=target[0], width=target[1], resample=resample)
    processor = hf_processor(size={"height": target[0], "width": target[1]}, resample=cfg.to_processor_dict()["resample"])
    reference = hf_pixels(processor, images)
    ours = preprocess_batch(torch.stack([pil_to_pixels(image) for image in images]), cfg)
    assert ours.shape == reference.shape and ours.dtype == torch.float32
    assert (ours - reference).abs().max() <= 0.02


def grey_levels(cfg: PreprocessConfig, levels: float) -> float:
    """`levels` grey levels (of 255) in normalised units, for the channel with the smallest std."""
    return levels * cfg.rescale_factor / min(cfg.image_std)


@pytest.mark.parametrize("source, target, factor", [
    ((32, 32), (224, 224), 7),  # CIFAR at ViT size
    ((5, 9), (15, 4), 3),  # width shrinks while height stretches
    ((4, 4), (32, 5), 8),  # even factor: PIL's rounding ties are the worst case
    ((1, 5), (3, 8), 3),  # one row: all edge
    ((10, 3), (10, 30), 1),  # only the width changes
])
def test_whole_factor_upsampling_within_half_a_grey_level_of_the_processor(source, target, factor):
    """The `_stretch_rows` route differs from PIL only by PIL's rounding to uint8 (half a grey level)."""
    cfg = PreprocessConfig(height=target[0], width=target[1], image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.3, 0.4))
    assert row_stretch_factor(cfg, *source) == factor
    images = random_images([source] * 6, seed=1)
    processor = hf_processor(size={"height": target[0], "width": target[1]}, image_mean=list(cfg.image_mean),
                             image_std=list(cfg.image_std))
    reference = hf_pixels(processor, images)
    ours = preprocess_batch(torch.stack([pil_to_pixels(image) for image in images]), cfg)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() <= grey_levels(cfg, 0.5 + 1e-3)


@pytest.mark.parametrize("source, target, factor", [((32, 32), (224, 224), 7), ((4, 4), (32, 5), 8), ((10, 3), (10, 30), 1)])
def test_row_stretching_within_half_a_grey_level_of_the_plain_definition(source, target, factor):
    """The tuned route against `tuned=False` (PIL-compatible uint8 resize, then scale and shift)."""
    cfg = PreprocessConfig(height=target[0], width=target[1], image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.3, 0.4))
    pixels = torch.randint(0, 256, (5, 3, *source), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    assert row_stretch_factor(cfg, *source) == factor and fast_resize.applies(pixels, cfg)
    tuned, plain = preprocess_batch(pixels, cfg), preprocess_batch(pixels, cfg, tuned=False)
    assert tuned.stride() == plain.stride()
    assert (tuned - plain).abs().max() <= grey_levels(cfg, 0.5 + 1e-3)


def test_shortest_edge_whole_factor_matches_processor():
    cfg = PreprocessConfig(height=None, width=None, shortest_edge=32)
    processor = hf_processor(size={"shortest_edge": 32}, do_center_crop=False)
    for source in [(16, 24), (24, 16)]:  # (h, w): 16 -> 32 rows (2x), and 24 -> 48 rows (2x)
        assert row_stretch_factor(cfg, *source) == 2
        images = random_images([source] * 2, seed=3)
        ours = preprocess_batch(torch.stack([pil_to_pixels(image) for image in images]), cfg)
        reference = hf_pixels(processor, images)
        assert ours.shape == reference.shape and (ours - reference).abs().max() <= grey_levels(cfg, 0.5 + 1e-3)


def test_other_resizes_take_the_exact_route():
    assert row_stretch_factor(PreprocessConfig(height=48, width=48), 32, 32) is None  # 1.5x
    assert row_stretch_factor(PreprocessConfig(height=64, width=64, resample="bicubic"), 32, 32) is None
    assert row_stretch_factor(PreprocessConfig(height=16, width=16), 32, 32) is None  # shrinking
    assert row_stretch_factor(PreprocessConfig(height=32, width=32), 32, 32) is None  # no resize at all
    images = random_images([(32, 32)] * 3, seed=2)
    processor = hf_processor(size={"height": 48, "width": 48})
    ours = preprocess_batch(torch.stack([pil_to_pixels(image) for image in images]), PreprocessConfig(height=48, width=48))
    assert (ours - hf_pixels(processor, images)).abs().max() <= 1e-5  # PIL's own rounding, reproduced


def test_shortest_edge_and_center_crop_match_processor():
    images = random_images([(40, 70), (70, 40)])
    cfg = PreprocessConfig(height=None, width=None, shortest_edge=36, do_center_crop=True, crop_height=32, crop_width=30)
    processor = hf_processor(size={"shortest_edge": 36}, do_center_crop=True, crop_size={"height": 32, "width": 30})
    reference = hf_pixels(processor, images)
    assert (preprocess_images(images, cfg) - reference).abs().max() <= 0.02


def test_preprocess_images_equals_batch_path():
    images = random_images([(32, 32)] * 3)
    cfg = PreprocessConfig()
    batch = preprocess_batch(torch.stack([pil_to_pixels(image) for image in images]), cfg)
    assert torch.equal(preprocess_images(images, cfg), batch)


@pytest.mark.parametrize("size", [224, 48])  # the row-stretching route and the uint8 route
def test_empty_batch_gives_an_empty_batch(size):
    out = preprocess_batch(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), PreprocessConfig(height=size, width=size))
    assert out.shape == (0, 3, size, size) and out.dtype == torch.float32


def test_no_resize_no_normalize():
    pixels = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    cfg = PreprocessConfig(height=8, width=8, do_normalize=False)
    assert torch.allclose(preprocess_batch(pixels, cfg), torch.ones(2, 3, 8, 8))
    raw = preprocess_batch(pixels, PreprocessConfig(do_resize=False, do_rescale=False, do_normalize=False))
    assert raw.shape == (2, 3, 8, 8) and raw.max() == 255


def test_collate_shapes_and_dtypes():
    examples = [{"pixels": torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), "labels": i} for i in range(5)]
    batch = ImageCollator(PreprocessConfig(height=64, width=64))(examples)
    assert batch["pixel_values"].shape == (5, 3, 64, 64) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == [0, 1, 2, 3, 4] and batch["labels"].dtype == torch.int64
    assert batch["pixel_values"].device.type == "cpu"


def test_collate_mixed_sizes_error_is_clear():
    examples = [{"pixels": torch.zeros(3, 8, 8, dtype=torch.uint8), "labels": 0},
                {"pixels": torch.zeros(3, 9, 8, dtype=torch.uint8), "labels": 1}]
    with pytest.raises(ValueError, match="differ in size"):
        ImageCollator(PreprocessConfig())(examples)


@needs_cifar10
def test_matches_vit_processor_on_real_cifar_at_224():
    files = sorted((CIFAR10 / "test").glob("*/*.jpg"))[::250][:40]  # 4 images of each class
    images = [open_image(path) for path in files]
    reference = hf_pixels(hf_processor(), images)
    ours = ImageCollator(PreprocessConfig())([{"pixels": pil_to_pixels(image), "labels": 0} for image in images])
    assert ours["pixel_values"].shape == (40, 3, 224, 224)
    assert (ours["pixel_values"] - reference).abs().max() <= 0.02  # the requirement
    assert (ours["pixel_values"] - reference).abs().max() <= grey_levels(PreprocessConfig(), 0.5 + 1e-3)  # the design


# ---- the processors of the other families ------------------------------------------------------------


def family_processors():
    """Each family's processor as its hub checkpoints configure it (PIL backends: no torchvision here)."""
    import transformers

    imagenet = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return {
        "deit": transformers.DeiTImageProcessorPil(**imagenet),  # 256 x 256 bicubic, centre crop 224
        "dinov2": transformers.BitImageProcessorPil(size={"shortest_edge": 256}, **imagenet),  # crop 224
        "clip": transformers.CLIPImageProcessorPil(),  # shortest edge 224 bicubic, crop 224, CLIP's mean / std
        "vit-mae": transformers.ViTImageProcessorPil(resample=3, **imagenet),  # 224 x 224 bicubic
    }


@pytest.mark.parametrize("family", ["deit", "dinov2", "clip", "vit-mae"])
def test_family_processors_match_the_batched_path(family, tmp_path):
    processor = family_processors()[family]
    processor.save_pretrained(tmp_path)
    cfg = PreprocessConfig.from_pretrained(tmp_path)
    assert cfg.processor_type == type(processor).__name__.removesuffix("Pil") and cfg.resample == "bicubic"
    images = random_images([(32, 32), (300, 260), (90, 140)], seed=5)
    reference = hf_pixels(processor, images)
    difference = (preprocess_images(images, cfg) - reference).abs()
    assert difference.max() <= 1e-5  # the same uint8 pixels as Pillow; only the float normalisation rounds
    cfg.save_pretrained(tmp_path / "again")  # our file: the same processor class, the same numbers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = AutoImageProcessor.from_pretrained(tmp_path / "again")
    assert type(again) is type(processor) and torch.equal(hf_pixels(again, images), reference)


@pytest.mark.parametrize("source, target", [((300, 260), (256, 256)), ((100, 100), (59, 80)), ((100, 100), (60, 80))])
def test_two_pass_resize_takes_pillows_pass_order(source, target):
    """Pillow 13 resizes the height first when it shrinks by more than twice the width's change (in pixels);
    with bicubic's overshoot clipped to uint8 in between, the wrong order costs up to ~20 grey levels."""
    cfg = PreprocessConfig(height=target[0], width=target[1], resample="bicubic")
    images = random_images([source] * 2, seed=6)
    processor = hf_processor(size={"height": target[0], "width": target[1]}, resample=3)
    difference = (preprocess_images(images, cfg) - hf_pixels(processor, images)).abs()
    assert difference.max() <= 1e-5


@pytest.mark.parametrize("legacy, expected", [
    ({"feature_extractor_type": "CLIPFeatureExtractor", "size": 224, "crop_size": 224, "do_center_crop": True,
      "resample": 3}, dict(processor_type="CLIPImageProcessor", shortest_edge=224, crop_height=224, height=None)),
    ({"feature_extractor_type": "DeiTFeatureExtractor", "size": 256, "crop_size": 224, "do_center_crop": True,
      "resample": 3}, dict(processor_type="DeiTImageProcessor", height=256, width=256, crop_width=224)),
    ({"feature_extractor_type": "ViTFeatureExtractor", "size": 224, "resample": 3},
     dict(processor_type="ViTImageProcessor", height=224, shortest_edge=None, do_center_crop=False)),
    ({"image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 384}},
     dict(processor_type="ViTImageProcessor", shortest_edge=384)),
], ids=["clip", "deit", "vit-mae", "other-class"])
def test_older_hub_processor_files_are_read_as_transformers_reads_them(legacy, expected):
    """The hub's older files (openai/clip-vit-base-patch16, facebook/deit-*, facebook/vit-mae-base) give
    `size` as one number: the shorter side for CLIP, a square otherwise."""
    cfg = PreprocessConfig.from_dict(legacy)
    assert {key: getattr(cfg, key) for key in expected} == expected


def test_another_resolution_keeps_the_resize_to_crop_ratio():
    deit = PreprocessConfig.from_dict(family_processors()["deit"].to_dict())
    at_384 = deit.at_resolution(384)
    assert (at_384.height, at_384.width, at_384.crop_height, at_384.crop_width) == (439, 439, 384, 384)
    assert at_384.square_output_size() == 384 and deit.square_output_size() == 224
    clip = PreprocessConfig.from_dict(family_processors()["clip"].to_dict()).at_resolution(336)
    assert (clip.shortest_edge, clip.crop_height) == (336, 336)
    assert PreprocessConfig().at_resolution(384).output_size(32, 32) == (384, 384)
    assert PreprocessConfig(height=None, width=None, shortest_edge=224).square_output_size() is None
