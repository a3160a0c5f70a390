"""Streaming input pipeline: decode + augment throughput, and the memory of a streaming training run.

    python -m vit_finetune.bench.streaming generate /tmp/stream-data --num-images 100000   # once, ~20 min/core
    python -m vit_finetune.bench.streaming throughput /tmp/stream-data --workers 0 1 2
    python -m vit_finetune.bench.streaming memory /tmp/stream-data --steps 500

`generate` writes a synthetic data set of JPEGs of mixed sizes (each side uniform in 160-500 px,
quality 90, smooth colour fields under fine noise: ~47 KB each, close to ImageNet's bytes per pixel)
twice: as an imagefolder (`images/{train,test}/<class>/<n>.jpg`) and as WebDataset shards of the
same bytes (`shards/train-00000.tar`, ..., `shards/test-00000.tar`: `<key>.jpg` + `<key>.cls`).

`throughput` times the train-time input path per image, from the shards: the streaming reader
(JPEG draft decode of the random-resized crop, flip, collate) with 0, 1 and 2 DataLoader workers,
against the naive path on the same images (full PIL decode, resize to the model size, then the
crop). `memory` runs `scripts/train.py` streaming from the shards for a number of steps and samples
the resident memory of the training process and its DataLoader workers.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

NUM_CLASSES = 10
SHARD_SIZE = 1000
SIDE_RANGE = (160, 500)
NOISE_TILE = 1024


# ---- the synthetic data set ------------------------------------------------------------------


class JpegMaker:
    """Deterministic JPEG bytes of one class: a smooth random colour field, a class tint, fine noise."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.noise = self.rng.integers(-24, 25, (NOISE_TILE, NOISE_TILE, 3)).astype(np.int16)  # (T, T, 3)

    def __call__(self, label: int) -> bytes:
        height, width = (int(side) for side in self.rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, 2))
        field = Image.fromarray(self.rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        tint = np.array([label * 25, 255 - label * 25, 128], dtype=np.int16) // 2
        top, left = (int(v) for v in self.rng.integers(0, NOISE_TILE - SIDE_RANGE[1], 2))
        pixels = np.asarray(field, dtype=np.int16) // 2 + tint + self.noise[top : top + height, left : left + width]
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()


def generate(root: str | Path, num_images: int, shard_size: int = SHARD_SIZE, seed: int = 0) -> Path:
    """Write `num_images` train JPEGs (and 2 % as many test ones) as an imagefolder and as WebDataset shards."""
    root = Path(root)
    make = JpegMaker(seed)
    for split, count in (("train", num_images), ("test", max(num_images // 50, 2 * NUM_CLASSES))):
        labels = np.random.default_rng(seed + 1).permutation(np.arange(count) % NUM_CLASSES)
        for first in range(0, count, shard_size):
            _write_shard(root, split, first // shard_size, [(first + i, int(label), make(int(label)))
                                                           for i, label in enumerate(labels[first : first + shard_size])])
    return root


def _write_shard(root: Path, split: str, shard: int, samples: list[tuple[int, int, bytes]]) -> None:
    (root / "shards").mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "shards" / f"{split}-{shard:05d}.tar", "w") as tar:
        for index, label, jpeg in samples:
            key = f"{index:08d}"
            _add_member(tar, f"{key}.jpg", jpeg)
            _add_member(tar, f"{key}.cls", str(label).encode())
            image_dir = root / "images" / split / f"class{label}"
            image_dir.mkdir(parents=True, exist_ok=True)
            (image_dir / f"{key}.jpg").write_bytes(jpeg)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# ---- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate", help="write the synthetic JPEG data set")
    make.add_argument("root")
    make.add_argument("--num-images", type=int, default=100_000)
    make.add_argument("--shard-size", type=int, default=SHARD_SIZE)
    args = parser.parse_args(argv)
    if args.command == "generate":
        print(json.dumps({"root": str(generate(args.root, args.num_images, args.shard_size))}))


if __name__ == "__main__":
    main()
