"""Benchmark the batched preprocessing path against transformers' ViTImageProcessor.

    python -m vit_finetune.bench.preprocess ../shared/data/cifar10/test --num-images 256 --batch-size 64

Both sides get the same decoded images (PIL RGB for the processor, uint8 tensors for ours) and run
batch by batch, interleaved, so machine load affects both alike. The pipeline benchmark times the
whole training input path (Arrow read, augmentation, collate) through a DataLoader.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.images import IMAGE_EXTENSIONS, open_image
from vit_finetune.data.preprocess import PreprocessConfig, pil_to_pixels, preprocess_batch


def _reference_processor(size: int):
    from transformers import ViTImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "falling back to ViTImageProcessorPil" without torchvision
        return ViTImageProcessor(size={"height": size, "width": size})


def _first_images(image_dir: str | Path, count: int) -> list:
    paths = sorted(p for p in Path(image_dir).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:count]
    if not paths:
        raise FileNotFoundError(f"{image_dir}: no images found")
    return [open_image(path) for path in paths]


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def compare_preprocess_speed(image_dir: str | Path, num_images: int = 256, batch_size: int = 64, size: int = 224) -> dict:
    """Images/s of ViTImageProcessor vs `preprocess_batch` on the same images, and their max |Δ|.

    `output_alloc_fill_images_per_s` times allocating and zeroing a float32 tensor of the output's
    shape: an upper bound for any path that returns a fresh float32 batch.
    """
    images = _first_images(image_dir, num_images)
    processor = _reference_processor(size)
    cfg = PreprocessConfig.from_dict(processor.to_dict())
    pixels = torch.stack([pil_to_pixels(image) for image in images])  # (N, 3, H, W) uint8, decoded once
    reference = lambda batch: processor(batch, return_tensors="pt")["pixel_values"]  # noqa: E731
    reference(images[:batch_size]), preprocess_batch(pixels[:batch_size], cfg)  # warm-up
    reference_s = ours_s = fill_s = max_diff = 0.0
    for start in range(0, len(images), batch_size):
        expected, seconds = _timed(reference, images[start : start + batch_size])
        reference_s += seconds
        got, seconds = _timed(preprocess_batch, pixels[start : start + batch_size], cfg)
        ours_s += seconds
        fill_s += _timed(lambda: torch.empty(got.shape).zero_())[1]  # the floor: just writing the output
        max_diff = max(max_diff, (got - expected).abs().max().item())
    return {"num_images": len(images), "batch_size": batch_size, "size": size, "threads": torch.get_num_threads(),
            "reference_images_per_s": len(images) / reference_s, "batched_images_per_s": len(images) / ours_s,
            "speedup": reference_s / ours_s, "max_abs_diff": max_diff,
            "output_alloc_fill_images_per_s": len(images) / fill_s}


def pipeline_speed(dataset: torch.utils.data.Dataset, cfg: PreprocessConfig, batch_size: int = 64,
                   num_workers: int = 0, num_batches: int = 20) -> dict:
    """Images/s of the full input path (read, augment, collate) through a shuffling DataLoader."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         collate_fn=ImageCollator(cfg), persistent_workers=False)
    batches = iter(loader)
    next(batches)  # warm-up (and worker start-up)
    start, seen = time.perf_counter(), 0
    for _, batch in zip(range(num_batches), batches):
        seen += len(batch["labels"])
    seconds = time.perf_counter() - start
    return {"images_per_s": seen / seconds, "batch_size": batch_size, "num_workers": num_workers, "images": seen}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image_dir")
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    print(json.dumps(compare_preprocess_speed(args.image_dir, args.num_images, args.batch_size, args.size), indent=2))


if __name__ == "__main__":
    main()
