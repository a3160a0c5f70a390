"""Our batched augmentation ops against kornia.augmentation: fidelity to Pillow, and speed.

    python -m benchmarks.augment ../shared/data/cifar10/test

Needs kornia (`pip install kornia`), which the package itself does not depend on. Fidelity: each op at one fixed argument on the same images, ours (uint8) and kornia's (float in
[0, 1], rounded back to uint8) against the Pillow call timm / torchvision make; max |Δ| in grey
levels and the share of values more than one grey level off. Kornia's ops are taken as its
RandAugment / ColorJitter use them (e.g. RandomBrightness, RandomContrast, RandomSaturation).
Speed: the median of a few timed calls per batch of CIFAR images (B=128 at 32 px, B=64 resized to
224 px), both sides in the same process, in turns, on one thread (as `augment_batch` and DataLoader
workers run augmentation).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from vit_finetune.data import image_ops
from vit_finetune.data.augment import one_thread
from vit_finetune.data.auto_augment import auto_augment, parse_auto_augment
from vit_finetune.data.color import color_jitter
from vit_finetune.data.config import AugmentConfig, ColorJitterConfig, RandomErasingConfig
from vit_finetune.data.erasing import random_erasing
from vit_finetune.data.images import IMAGE_EXTENSIONS, open_image
from vit_finetune.data.mixup import mix_batch


def _pil_images(image_dir: str | Path, count: int) -> list[Image.Image]:
    paths = sorted(p for p in Path(image_dir).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:count]
    if not paths:
        raise FileNotFoundError(f"{image_dir}: no images found")
    return [open_image(path) for path in paths]


def _to_uint8(images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in images])


def _one(value: float, count: int) -> torch.Tensor:
    return torch.full((count,), value, dtype=torch.float64)


def _fidelity_cases(n: int, height: int, width: int) -> dict:
    """op -> (Pillow reference per image, ours on uint8 (n,3,H,W), kornia on float (n,3,H,W))."""
    import kornia.augmentation as KA
    import kornia.enhance as KE
    import kornia.geometry.transform as KT

    def fixed(module_cls, **ranges):  # a kornia augmentation with its random range pinned to one value
        return module_cls(**{key: (value, value) for key, value in ranges.items()}, p=1.0)

    def pil_affine(data):
        return lambda im: im.transform(im.size, Image.AFFINE, data, resample=Image.BILINEAR, fillcolor=(0, 0, 0))

    centre = torch.tensor([[width / 2 - 0.5, height / 2 - 0.5]]).expand(n, 2)
    return {
        "AutoContrast": (ImageOps.autocontrast, lambda x: image_ops.apply_lut(x, image_ops.autocontrast_lut(x)),
                         KA.RandomAutoContrast(p=1.0)),
        "Equalize": (ImageOps.equalize, lambda x: image_ops.apply_lut(x, image_ops.equalize_lut(x)), KE.equalize),
        "Posterize 4 bits": (lambda im: ImageOps.posterize(im, 4),
                             lambda x: image_ops.apply_lut(x, image_ops.posterize_lut(_one(4, n))), lambda x: KE.posterize(x, 4)),
        "Solarize 128": (lambda im: ImageOps.solarize(im, 128),
                         lambda x: image_ops.apply_lut(x, image_ops.solarize_lut(_one(128, n))),
                         lambda x: KE.solarize(x, 128 / 255)),
        "Brightness 1.5": (lambda im: ImageEnhance.Brightness(im).enhance(1.5),
                           lambda x: image_ops.adjust_brightness(x, _one(1.5, n)), fixed(KA.RandomBrightness, brightness=1.5)),
        "Contrast 1.5": (lambda im: ImageEnhance.Contrast(im).enhance(1.5),
                         lambda x: image_ops.adjust_contrast(x, _one(1.5, n)), fixed(KA.RandomContrast, contrast=1.5)),
        "Color 1.5": (lambda im: ImageEnhance.Color(im).enhance(1.5),
                      lambda x: image_ops.adjust_saturation(x, _one(1.5, n)), fixed(KA.RandomSaturation, saturation=1.5)),
        "Sharpness 1.5": (lambda im: ImageEnhance.Sharpness(im).enhance(1.5),
                          lambda x: image_ops.adjust_sharpness(x, _one(1.5, n)), lambda x: KE.sharpness(x, 1.5)),
        "Hue +0.1": (lambda im: _pil_hue(im, 0.1), lambda x: image_ops.adjust_hue(x, _one(0.1, n)),
                     lambda x: KE.adjust_hue(x, 0.1 * 2 * np.pi)),
        "Rotate 20 deg": (lambda im: im.rotate(20, resample=Image.BILINEAR, fillcolor=(0, 0, 0)),
                          lambda x: image_ops.affine(x, image_ops.rotate_matrix(_one(20, n), height, width), "bilinear", 0),
                          lambda x: KT.rotate(x, torch.full((n,), 20.0), centre, align_corners=True)),
        "ShearX 0.2": (pil_affine((1, 0.2, 0, 0, 1, 0)),
                       lambda x: image_ops.affine(x, image_ops.shear_matrix(_one(0.2, n), "x"), "bilinear", 0),
                       lambda x: KT.shear(x, torch.tensor([[-0.2, 0.0]]).expand(n, 2))),
        "TranslateX 3.4 px": (pil_affine((1, 0, -3.4, 0, 1, 0)),
                              lambda x: image_ops.affine(x, image_ops.translate_matrix(_one(-3.4, n), "x"), "bilinear", 0),
                              lambda x: KT.translate(x, torch.tensor([[3.4, 0.0]]).expand(n, 2))),
    }


def _pil_hue(image: Image.Image, factor: float) -> Image.Image:
    """torchvision's PIL adjust_hue."""
    h, s, v = image.convert("HSV").split()
    hue = np.array(h, dtype=np.uint8)
    hue += np.uint8(int(factor * 255) % 256)
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB")


def _errors(ours: torch.Tensor, reference: torch.Tensor) -> dict:
    diff = (ours.int() - reference.int()).abs()
    return {"max_abs": int(diff.max()), "share_above_1": round(float((diff > 1).float().mean()), 4)}


def fidelity(images: list[Image.Image]) -> dict:
    """op -> {"ours": errors, "kornia": errors} against Pillow on `images` (all the same size)."""
    batch = _to_uint8(images)
    result = {}
    for op, (pil_op, ours, kornia_op) in _fidelity_cases(len(images), *batch.shape[-2:]).items():
        reference = _to_uint8([pil_op(image) for image in images])
        kornia_out = (kornia_op(batch.float() / 255).clamp(0, 1) * 255).round().to(torch.uint8)
        result[op] = {"ours": _errors(ours(batch), reference), "kornia": _errors(kornia_out, reference)}
    return result


def _speed_cases(batch: torch.Tensor, labels: torch.Tensor) -> dict:
    """step -> (ours, kornia): callables that augment `batch` once."""
    import kornia.augmentation as KA
    from kornia.augmentation.auto import RandAugment, TrivialAugment

    floats = batch.float() / 255
    normalised = (floats - 0.5) / 0.5
    mix_cfg = AugmentConfig(mixup_alpha=0.8, cutmix_alpha=1.0)
    kornia_mix = [KA.RandomMixUpV2(p=1.0, data_keys=["input", "class"]), KA.RandomCutMixV2(p=1.0, use_correct_lambda=True, data_keys=["input", "class"])]
    jitter = ColorJitterConfig(0.4, 0.4, 0.4, 0.1)
    return {
        "RandAugment (ours: rand-m9-mstd0.5; kornia: n=2, m=27 of 30)":
            (lambda: auto_augment(batch, parse_auto_augment("rand-m9-mstd0.5")), lambda: RandAugment(n=2, m=27)(floats)),
        "TrivialAugmentWide": (lambda: auto_augment(batch, parse_auto_augment("trivial")), lambda: TrivialAugment()(floats)),
        "ColorJitter 0.4/0.4/0.4/0.1": (lambda: color_jitter(batch, jitter),
                                        lambda: KA.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)(floats)),
        "RandomErasing p=0.25": (lambda: random_erasing(normalised.clone(), RandomErasingConfig(p=0.25, mode="pixel")),
                                 lambda: KA.RandomErasing(p=0.25)(normalised)),
        "Mixup / CutMix (switch 0.5)": (lambda: mix_batch(normalised, labels, 10, mix_cfg),
                                        lambda: kornia_mix[int(torch.rand(()) < 0.5)](normalised, labels)),
    }


def speed(batch: torch.Tensor, rounds: int = 7) -> dict:
    """step -> ms per batch (median over rounds) for ours and kornia, timed in turns."""
    labels = torch.randint(0, 10, (len(batch),))
    result = {}
    for step, sides in _speed_cases(batch, labels).items():
        times = {"ours": [], "kornia": []}
        for _ in range(rounds):
            for side, run in zip(times, sides):
                with one_thread():
                    start = time.perf_counter()
                    run()
                    times[side].append((time.perf_counter() - start) * 1e3)
        result[step] = {side: round(statistics.median(took[1:]), 2) for side, took in times.items()}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image_dir", help="a folder of same-size images, e.g. ../shared/data/cifar10/test")
    parser.add_argument("--fidelity-images", type=int, default=64)
    args = parser.parse_args(argv)
    images = _pil_images(args.image_dir, 128)
    small = _to_uint8(images)
    large = F.interpolate(small[:64].float(), size=(224, 224), mode="bilinear").round().clamp(0, 255).to(torch.uint8)
    torch.manual_seed(0)
    report = {"threads": torch.get_num_threads(), "fidelity": fidelity(images[: args.fidelity_images]),
              "speed_ms_B128_32px": speed(small), "speed_ms_B64_224px": speed(large)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
