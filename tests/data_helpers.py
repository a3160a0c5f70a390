"""Generators of small, learnable image data sets for tests (reused by the training/eval tests).

Each class is a distinct base colour plus a class-specific bright square, with a little noise: a
tiny model separates them after a few steps (>= 90 % accuracy is easy).
"""

from __future__ import annotations

import colorsys
import io
import json
import shutil
import tarfile
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

# The real CIFAR-10 imagefolder copy beside the repository (tests that need it skip without it).
CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
needs_cifar10 = pytest.mark.skipif(not CIFAR10.is_dir(), reason="needs the CIFAR-10 copy in ../shared/data/cifar10")

NAMED_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 50, 220), "yellow": (230, 220, 30),
                 "black": (15, 15, 15), "white": (240, 240, 240), "cyan": (30, 210, 220), "magenta": (210, 40, 200)}


def class_colour(name: str, index: int, count: int) -> tuple[int, int, int]:
    """The base colour of a class: its name if it is a colour, else evenly spaced hues."""
    if name in NAMED_COLOURS:
        return NAMED_COLOURS[name]
    red, green, blue = colorsys.hsv_to_rgb(index / max(count, 1), 0.85, 0.9)
    return int(red * 255), int(green * 255), int(blue * 255)


def make_class_image(index: int, count: int, name: str, size: int | tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One RGB image of class `index`: base colour + noise + a bright square whose corner depends on the class."""
    height, width = (size, size) if isinstance(size, int) else size
    pixels = np.empty((height, width, 3), dtype=np.float64)
    pixels[:] = class_colour(name, index, count)
    pixels += rng.normal(0.0, 12.0, size=pixels.shape)
    side_h, side_w = max(height // 3, 1), max(width // 3, 1)
    top, left = (index // 2 % 2) * (height - side_h), (index % 2) * (width - side_w)
    pixels[top : top + side_h, left : left + side_w] = 255.0 - pixels[top : top + side_h, left : left + side_w]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def make_image_folder(root: str | Path, classes: tuple[str, ...] = ("red", "green", "blue"), per_class: int = 12,
                      size: int | tuple[int, int] = 32, splits: tuple[str, ...] = ("train", "test"),
                      fmt: str = "png", seed: int = 0) -> Path:
    """Write `<root>/<split>/<class>/<i>.<fmt>` images and return `root` (train gets `per_class`, others half)."""
    root, rng = Path(root), np.random.default_rng(seed)
    for split in splits:
        count = per_class if split == splits[0] else max(per_class // 2, 2)
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                make_class_image(index, len(classes), name, size, rng).save(folder / f"{i:04d}.{fmt}")
    return root


def make_dataset_dict(classes: tuple[str, ...] = ("red", "green", "blue"), per_class: int = 8, size: int = 16,
                      image_column: str = "img", label_column: str = "label", seed: int = 0) -> datasets.DatasetDict:
    """An in-memory DatasetDict (train, test) shaped like `uoft-cs/cifar10` (`img` Image, `label` ClassLabel)."""
    rng = np.random.default_rng(seed)
    features = datasets.Features({image_column: datasets.Image(), label_column: datasets.ClassLabel(names=list(classes))})
    splits = {}
    for split, count in (("train", per_class), ("test", max(per_class // 2, 2))):
        labels = [index for index in range(len(classes)) for _ in range(count)]
        images = [make_class_image(label, len(classes), classes[label], size, rng) for label in labels]
        splits[split] = datasets.Dataset.from_dict({image_column: images, label_column: labels}, features=features)
    return datasets.DatasetDict(splits)


def copy_cifar10_slice(target: Path, per_class: dict[str, int]) -> Path:
    """The first `per_class[split]` real CIFAR-10 images of every class, in the same imagefolder layout."""
    for split, count in per_class.items():
        for class_dir in sorted((CIFAR10 / split).iterdir()):
            out = target / split / class_dir.name
            out.mkdir(parents=True)
            for image in sorted(class_dir.glob("*.jpg"))[:count]:
                shutil.copy(image, out / image.name)
    return target


def encode_image(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def class_examples(classes: tuple[str, ...], count: int, size: int | tuple[int, int], rng: np.random.Generator,
                   first: int = 0) -> list[tuple[str, int, bytes]]:
    """(key, label, PNG bytes) of `count` learnable images, classes in turn."""
    examples = []
    for index in range(first, first + count):
        label = index % len(classes)
        image = make_class_image(label, len(classes), classes[label], size, rng)
        examples.append((f"{index:06d}", label, encode_image(image)))
    return examples


def write_tar_shard(path: Path, examples: list[tuple[str, object, bytes]], label_member: str = "cls") -> Path:
    """A WebDataset tar: `<key>.png` + `<key>.cls` (int) or `<key>.json` ({"label": ...}); label None: no member."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, label, png in examples:
            members = [(f"{key}.png", png)]
            if label is not None:
                data = str(label).encode() if label_member == "cls" else json.dumps({"label": label}).encode()
                members.append((f"{key}.{label_member}", data))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def make_shards(root: Path, classes: tuple[str, ...] = ("red", "green", "blue"), shards: dict[str, int] | None = None,
                per_shard: int = 8, size: int | tuple[int, int] = 32, fmt: str = "tar", seed: int = 0) -> Path:
    """`<root>/<split>-0000N.<tar|parquet>` shards of learnable images; `shards` = shard count per split."""
    rng = np.random.default_rng(seed)
    first = 0
    for split, count in (shards or {"train": 2, "test": 1}).items():
        for shard in range(count):
            examples = class_examples(classes, per_shard, size, rng, first)
            first += per_shard
            path = root / f"{split}-{shard:05d}.{fmt}"
            if fmt == "tar":
                write_tar_shard(path, examples)
            else:
                write_parquet_shard(path, examples, classes)
    return root


def write_parquet_shard(path: Path, examples: list[tuple[str, int, bytes]], classes: tuple[str, ...]) -> Path:
    """A Parquet file as `datasets` writes one: an `image` column of {bytes, path} and a ClassLabel `label`."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(classes))})
    rows = datasets.Dataset.from_dict({"image": [{"bytes": png, "path": f"{key}.png"} for key, _, png in examples],
                                       "label": [label for _, label, _ in examples]}, features=features)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(str(path))
    return path
