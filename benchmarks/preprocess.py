"""Benchmark the batched preprocessing path against transformers' ViTImageProcessor.

    python -m benchmarks.preprocess ../shared/data/cifar10/test --num-images 512 --batch-size 64
    python -m benchmarks.preprocess ../shared/data/cifar10 --pipeline --size 32 --batch-size 128
    python -m benchmarks.preprocess ../shared/data/cifar10 --pipeline --size 32 --batch-size 128 \
        --augment auto_augment=rand-m9-mstd0.5 --augment random_erasing.p=0.25 --augment mixup_alpha=0.8 --augment cutmix_alpha=1.0

Both sides get the same decoded images (PIL RGB for the processor, uint8 tensors for ours) and take
turns, a whole pass over the images each, for a few rounds, so machine load affects both alike. The
pipeline benchmark times the whole training input path (Arrow read, augmentation, collate) through
a DataLoader.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.images import IMAGE_EXTENSIONS, open_image
from vit_finetune.data.preprocess import PIL_RESAMPLE, PreprocessConfig, pil_to_pixels, preprocess_batch


def _reference_processor(size: int, resample: str = "bilinear"):
    from transformers import ViTImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "falling back to ViTImageProcessorPil" without torchvision
        return ViTImageProcessor(size={"height": size, "width": size}, resample=PIL_RESAMPLE[resample])


def _first_images(image_dir: str | Path, count: int) -> list:
    paths = sorted(p for p in Path(image_dir).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:count]
    if not paths:
        raise FileNotFoundError(f"{image_dir}: no images found")
    return [open_image(path) for path in paths]


def compare_preprocess_speed(image_dir: str | Path, num_images: int = 256, batch_size: int = 64, size: int = 224,
                             rounds: int = 5, resample: str = "bilinear") -> dict:
    """Images/s of ViTImageProcessor vs our collator on the same images, and their max |Δ|.

    Ours is `ImageCollator`, the training and evaluation path, whose batches reuse pooled buffers.
    `fresh_output_images_per_s` times `preprocess_batch` writing a newly allocated batch instead, to
    show what the pool saves (page-faulting 38 MB of new memory per 64 x 224 px batch). Each round
    streams all images through each side in turn, as a data loader would; the order rotates and
    each side's median round counts.
    """
    images = _first_images(image_dir, num_images)
    processor = _reference_processor(size, resample)
    cfg = PreprocessConfig.from_dict(processor.to_dict())
    examples = [{"pixels": pil_to_pixels(image), "labels": 0} for image in images]  # decoded once
    collate = ImageCollator(cfg)
    sides = {"reference": lambda span: processor(images[span], return_tensors="pt")["pixel_values"],
             "ours": lambda span: collate(examples[span])["pixel_values"],
             "fresh": lambda span: preprocess_batch(torch.stack([e["pixels"] for e in examples[span]]), cfg)}
    batches = [slice(start, start + batch_size) for start in range(0, len(images), batch_size)]
    max_diff = max((sides["ours"](span) - sides["reference"](span)).abs().max().item() for span in batches)
    seconds = {side: [] for side in sides}
    for round_index in range(rounds):
        for side in list(sides)[round_index % 3 :] + list(sides)[: round_index % 3]:
            start = time.perf_counter()
            for span in batches:
                sides[side](span)  # the result is dropped, as the Trainer drops a batch after its step
            seconds[side].append(time.perf_counter() - start)
    rate = {side: len(images) / statistics.median(took) for side, took in seconds.items()}
    return {"num_images": len(images), "batch_size": batch_size, "size": size, "resample": resample,
            "threads": torch.get_num_threads(),
            "rounds": rounds, "reference_images_per_s": rate["reference"], "batched_images_per_s": rate["ours"],
            "speedup": rate["ours"] / rate["reference"], "max_abs_diff": max_diff,
            "fresh_output_images_per_s": rate["fresh"], "fresh_output_speedup": rate["fresh"] / rate["reference"]}


def pipeline_speed(dataset: torch.utils.data.Dataset, cfg: PreprocessConfig, batch_size: int = 64,
                   num_workers: int = 0, num_batches: int = 20, batch_step=None) -> dict:
    """Images/s of the full input path (read, augment, collate, then `batch_step(batch)`) through a shuffling DataLoader."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         collate_fn=ImageCollator(cfg), persistent_workers=False)
    batches = iter(loader)
    next(batches)  # warm-up (and worker start-up)
    start, seen = time.perf_counter(), 0
    for _, batch in zip(range(num_batches), batches):
        batch = batch_step(batch) if batch_step is not None else batch
        seen += len(batch["labels"])
    seconds = time.perf_counter() - start
    return {"images_per_s": seen / seconds, "batch_size": batch_size, "num_workers": num_workers, "images": seen}


def training_pipeline_speed(data_dir: str | Path, size: int, batch_size: int, crop: str, num_batches: int = 50,
                            augment: list[str] = ()) -> dict:
    """`pipeline_speed` of a data set's train split as training reads it: cached decode, augmentation, collate,
    and the training-step augmentations (erasing, mixup). `augment`: `key=value` settings of data.augment."""
    from vit_finetune.config import apply_override
    from vit_finetune.data.batch_augment import augment_train_batch
    from vit_finetune.data.config import AugmentConfig, DataConfig
    from vit_finetune.data.sources import apply_train_augmentation, load_splits
    from vit_finetune.typed import build_dataclass

    tree = {"crop": crop, "horizontal_flip": True}
    for setting in augment:
        apply_override(tree, setting)
    augment_cfg = build_dataclass(AugmentConfig, tree, "augment")
    cfg = PreprocessConfig(height=size, width=size)
    splits = load_splits(DataConfig(dataset=str(data_dir)), preprocess=cfg)
    train = apply_train_augmentation(splits.train, augment_cfg)
    step = functools.partial(augment_train_batch, num_classes=len(splits.label_names), cfg=augment_cfg)
    return {"size": size, "crop": crop, "augment": list(augment),
            **pipeline_speed(train, cfg, batch_size, num_batches=num_batches, batch_step=step)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="--pipeline: image_dir is the data set (train/ and test/), e.g. "
                                            "../shared/data/cifar10 --pipeline --size 32 --batch-size 128 --crop none")
    parser.add_argument("image_dir")
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--resample", default="bilinear", choices=["bilinear", "bicubic"],
                        help="the processor's resampling (ViT's is bilinear; DeiT, DINOv2, CLIP and MAE use bicubic)")
    parser.add_argument("--pipeline", action="store_true", help="time the whole training input path instead")
    parser.add_argument("--crop", default="none", choices=["none", "random_padded", "random_resized"])
    parser.add_argument("--augment", action="append", default=[], metavar="KEY=VALUE",
                        help="a data.augment setting for --pipeline, e.g. auto_augment=rand-m9-mstd0.5 or random_erasing.p=0.25")
    args = parser.parse_args(argv)
    if args.pipeline:
        result = training_pipeline_speed(args.image_dir, args.size, args.batch_size, args.crop, augment=args.augment)
    else:
        result = compare_preprocess_speed(args.image_dir, args.num_images, args.batch_size, args.size,
                                          resample=args.resample)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
