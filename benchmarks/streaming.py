"""Streaming input pipeline: decode + augment throughput, and the memory of a streaming training run.

    python -m benchmarks.streaming generate /tmp/stream-data --num-images 100000   # once, ~20 min/core
    python -m benchmarks.streaming throughput /tmp/stream-data --workers 0 1 2
    python -m benchmarks.streaming cost /tmp/stream-data --images 1000
    python -m benchmarks.streaming memory /tmp/stream-data --steps 500

`generate` writes a synthetic data set of JPEGs of mixed sizes (each side uniform in 160-500 px,
quality 90, smooth colour fields under fine noise: ~47 KB each, close to ImageNet's bytes per pixel)
twice: as an imagefolder (`images/{train,test}/<class>/<n>.jpg`) and as WebDataset shards of the
same bytes (`shards/train-00000.tar`, ..., `shards/test-00000.tar`: `<key>.jpg` + `<key>.cls`).

`throughput` times the train-time input path at 224 px, batches of 64: the streaming reader of the
shards (records read by `datasets`' webdataset builder, JPEG draft decode of the random-resized crop,
flip, collate) with 0, 1 and 2 DataLoader workers, against the naive path on the same images from
the imagefolder (full PIL decode, resize to 224, then the random-resized crop and flip, collate)
with as many workers. It also times `load_splits` (the shard index), the rate at which a resumed
stream skips records without decoding them, and the random-resized crop decode of large JPEGs
(1000-2000 px a side, as from a camera) with and without draft mode. `cost` gives the CPU time per
image of both paths without workers (process time: the per-core cost, even on a shared machine).
`memory` runs `scripts/train.py` streaming from the shards for a number of steps (a small ViT at
224 px, 2 workers, checkpoints halfway and at the end, the first 1 000 test images evaluated at the
end) and samples, every second, the resident memory (RSS) of the training process and the
proportional memory (PSS) of it and its DataLoader workers together.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from vit_finetune.data.config import AugmentConfig

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 10
SHARD_SIZE = 1000
SIDE_RANGE = (160, 500)
NOISE_TILE = 1024


# ---- the synthetic data set ------------------------------------------------------------------


class JpegMaker:
    """Deterministic JPEG bytes of one class: a smooth random colour field, a class tint, fine noise."""

    def __init__(self, seed: int, sides: tuple[int, int] = SIDE_RANGE):
        self.rng, self.sides = np.random.default_rng(seed), sides
        tile = max(NOISE_TILE, 2 * sides[1])
        self.noise = self.rng.integers(-24, 25, (tile, tile, 3)).astype(np.int16)  # (T, T, 3)

    def __call__(self, label: int) -> bytes:
        height, width = (int(side) for side in self.rng.integers(self.sides[0], self.sides[1] + 1, 2))
        field = Image.fromarray(self.rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        tint = np.array([label * 25, 255 - label * 25, 128], dtype=np.int16) // 2
        top, left = (int(v) for v in self.rng.integers(0, len(self.noise) - self.sides[1], 2))
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


# ---- throughput: decode + augment ----------------------------------------------------------------


def _augment() -> AugmentConfig:
    return AugmentConfig(crop="random_resized", horizontal_flip=True)


class NaiveImages(torch.utils.data.Dataset):
    """The naive path: full PIL decode, resize to the model size, then the random-resized crop and flip
    on that (what a decode-then-resize cache feeds the augmentation)."""

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        from vit_finetune.data.augment import augment_batch

        image = Image.open(self.paths[index]).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)  # (3, S, S)
        return {"pixels": augment_batch(pixels[None], _augment())[0], "labels": 0}


def _timed_batches(dataset, size: int, batch_size: int, workers: int, images: int, shuffle: bool) -> dict:
    """Images collated after the first batch, with the wall time and this process's CPU time they took."""
    from vit_finetune.data.collate import ImageCollator
    from vit_finetune.data.preprocess import PreprocessConfig

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=shuffle,
                                         collate_fn=ImageCollator(PreprocessConfig(height=size, width=size)))
    batches = iter(loader)
    next(batches)  # worker start-up, first reads
    start, cpu_start, seen = time.perf_counter(), time.process_time(), 0
    while seen < images:
        seen += len(next(batches)["labels"])
    return {"images": seen, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}


def _images_per_second(dataset, size: int, batch_size: int, workers: int, images: int, shuffle: bool) -> float:
    timed = _timed_batches(dataset, size, batch_size, workers, images, shuffle)
    return timed["images"] / timed["seconds"]


def _input_paths(root: Path, size: int) -> tuple[dict, float]:
    """The two train-time input paths over the same images ({"ours": shards, "naive": image files}) and the
    seconds `load_splits` took to index the shards."""
    from vit_finetune.data.config import DataConfig
    from vit_finetune.data.preprocess import PreprocessConfig
    from vit_finetune.data.sources import apply_train_augmentation, load_splits

    start = time.perf_counter()
    splits = load_splits(DataConfig(dataset=str(root / "shards"), streaming=True, validation_fraction=0.0),
                         preprocess=PreprocessConfig(height=size, width=size))
    index_seconds = time.perf_counter() - start
    return {"ours": apply_train_augmentation(splits.train, _augment()),
            "naive": NaiveImages(sorted((root / "images" / "train").rglob("*.jpg")), size)}, index_seconds


def throughput(root: str | Path, workers: list[int], images: int = 2000, size: int = 224, batch_size: int = 64,
               rounds: int = 3, large_images: int = 100) -> dict:
    """Train-time input images/s from the shards (ours) and from the image files (naive), per worker count:
    the median of `rounds` rounds, each timing every (path, workers) pair in turn, so load changes hit all alike."""
    paths, index_seconds = _input_paths(Path(root), size)
    timings = {(name, count): [] for count in workers for name in paths}
    for _ in range(rounds):
        for name, count in timings:
            timings[name, count].append(_images_per_second(paths[name], size, batch_size, count, images,
                                                           shuffle=name == "naive"))
    rows = [{"workers": count, "ours_images_per_s": statistics.median(timings["ours", count]),
             "naive_images_per_s": statistics.median(timings["naive", count])} for count in workers]
    for row in rows:
        row["speedup"] = row["ours_images_per_s"] / row["naive_images_per_s"]
    return {"images": images, "size": size, "batch_size": batch_size, "rounds": rounds,
            "train_examples": paths["ours"].estimated_size, "load_splits_seconds": index_seconds,
            "skip_records_per_s": _skip_rate(paths["ours"], images), "large_jpegs": draft_gain(large_images, size=size), "rows": rows,
            "all_rounds": {
                f"{name}-{count}": values for (name, count), values in timings.items()}}


def cpu_cost(root: str | Path, images: int = 1000, size: int = 224, batch_size: int = 64) -> dict:
    """CPU milliseconds per image of the train-time input path, ours and naive, in the main process (no
    workers): process time, which other jobs on a shared machine inflate far less than wall time. The
    paths alternate twice; the second timing of each counts."""
    paths, _ = _input_paths(Path(root), size)
    cpu_ms = {}
    for name in ("ours", "naive", "ours", "naive"):
        timed = _timed_batches(paths[name], size, batch_size, 0, images, shuffle=name == "naive")
        cpu_ms[name] = 1e3 * timed["cpu_seconds"] / timed["images"]
    return {"images": images, "size": size, "batch_size": batch_size, "ours_cpu_ms_per_image": cpu_ms["ours"],
            "naive_cpu_ms_per_image": cpu_ms["naive"], "ours_images_per_cpu_second": 1e3 / cpu_ms["ours"],
            "naive_over_ours": cpu_ms["naive"] / cpu_ms["ours"]}


def draft_gain(count: int = 100, sides: tuple[int, int] = (1000, 2000), size: int = 224) -> dict:
    """Random-resized crops of large JPEGs (sides uniform in `sides`, as from a camera): draft decode vs full decode."""
    from vit_finetune.data.draft import decode_random_crop

    make = JpegMaker(seed=2, sides=sides)
    jpegs = [make(index % NUM_CLASSES) for index in range(count)]
    seconds = {}
    for use_draft in (True, False, True, False):  # interleaved, the second of each counts
        torch.manual_seed(0)
        start = time.perf_counter()
        for jpeg in jpegs:
            decode_random_crop(jpeg, "bench.jpg", (size, size), (0.08, 1.0), (3 / 4, 4 / 3), use_draft=use_draft)
        seconds[use_draft] = time.perf_counter() - start
    return {"images": count, "sides": list(sides), "draft_ms": 1e3 * seconds[True] / count,
            "full_decode_ms": 1e3 * seconds[False] / count, "speedup": seconds[False] / seconds[True]}


def _skip_rate(train, records: int) -> float:
    """Records per second read but not decoded: the cost of fast-forwarding a resumed stream."""
    start = time.perf_counter()
    for _ in itertools.islice(train._training_items(), records):
        pass
    return records / (time.perf_counter() - start)


# ---- memory: a streaming training run ----------------------------------------------------------------


def memory(root: str | Path, steps: int = 500, batch_size: int = 32, workers: int = 2, interval: float = 1.0) -> dict:
    """Run `scripts/train.py` streaming from the shards for `steps` steps; sample the memory of its processes (Linux /proc)."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "stream.yaml"
        config.write_text(yaml.safe_dump(_memory_run_tree(Path(root) / "shards", Path(folder) / "run", steps,
                                                          batch_size, workers)))
        log = Path(folder) / "stderr.log"  # a file, not a pipe: an unread pipe would fill and stop the run
        start = time.perf_counter()
        with log.open("w") as stderr:
            process = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(config)],
                                       stdout=subprocess.DEVNULL, stderr=stderr)
            samples = _sample_memory(process, interval)
        stderr = log.read_text()
        seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"training exited {process.returncode}: {stderr[-2000:]}")
    return {"steps": steps, "batch_size": batch_size, "workers": workers, "seconds": seconds, "samples": len(samples),
            "peak_rss_main_gb": max(rss for rss, _ in samples) / 2**30,
            "peak_pss_all_processes_gb": max(pss for _, pss in samples) / 2**30,
            "command": f"python -m benchmarks.streaming memory ROOT --steps {steps} --workers {workers}"}


def _memory_run_tree(shards: Path, output_dir: Path, steps: int, batch_size: int, workers: int) -> dict:
    """A small ViT at 224 px (patch 32) so that 500 steps fit a CPU; the input pipeline is the full-size one.
    The data set's own test split (the first 1 000) is evaluated at the end; checkpoints halfway and at the end."""
    return {
        "model": {"checkpoint": None, "arch": "vit", "size": "tiny", "image_size": 224, "patch_size": 32,
                  "hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 192},
        "data": {"dataset": str(shards), "streaming": True, "validation_fraction": 0.0, "max_eval_samples": 1000,
                 "augment": {"crop": "random_resized", "horizontal_flip": True}},
        "training": {"output_dir": str(output_dir), "max_steps": steps, "per_device_train_batch_size": batch_size,
                     "per_device_eval_batch_size": 64, "save_strategy": "steps", "save_steps": steps // 2,
                     "dataloader_num_workers": workers,
                     "logging_steps": 50, "learning_rate": 1e-3, "precision": "fp32", "seed": 0},
    }


def _sample_memory(process: subprocess.Popen, interval: float) -> list[tuple[int, int]]:
    """(RSS of the training process, PSS of it and all its descendants) every `interval` s until it exits.

    PSS divides each page shared after fork among the processes sharing it, so the sum counts it once."""
    samples = []
    while process.poll() is None:
        pids = [process.pid] + _descendants(process.pid)
        rss = _proc_kib(process.pid, "status", "VmRSS:")
        if rss:
            samples.append((rss * 1024, sum(_proc_kib(pid, "smaps_rollup", "Pss:") for pid in pids) * 1024))
        time.sleep(interval)
    return samples


def _descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def _proc_kib(pid: int, name: str, field: str) -> int:
    """A kB field of /proc/<pid>/<name> (0 once the process is gone)."""
    try:
        line = next(line for line in Path(f"/proc/{pid}/{name}").read_text().splitlines() if line.startswith(field))
        return int(line.split()[1])
    except (OSError, StopIteration, ValueError):
        return 0


# ---- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate", help="write the synthetic JPEG data set")
    make.add_argument("root")
    make.add_argument("--num-images", type=int, default=100_000)
    make.add_argument("--shard-size", type=int, default=SHARD_SIZE)
    speed = commands.add_parser("throughput", help="train-time input images/s, ours vs naive")
    speed.add_argument("root")
    speed.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    speed.add_argument("--images", type=int, default=2000)
    speed.add_argument("--size", type=int, default=224)
    speed.add_argument("--rounds", type=int, default=3)
    cost = commands.add_parser("cost", help="CPU ms per image of the input path, ours vs naive")
    cost.add_argument("root")
    cost.add_argument("--images", type=int, default=1000)
    run = commands.add_parser("memory", help="peak memory of a streaming training run")
    run.add_argument("root")
    run.add_argument("--steps", type=int, default=500)
    run.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "generate":
        result = {"root": str(generate(args.root, args.num_images, args.shard_size))}
    elif args.command == "throughput":
        result = throughput(args.root, args.workers, args.images, args.size, rounds=args.rounds)
    elif args.command == "cost":
        result = cpu_cost(args.root, args.images)
    else:
        result = memory(args.root, args.steps, workers=args.workers)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
