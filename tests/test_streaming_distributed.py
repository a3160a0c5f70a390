"""Streaming with 2 CPU processes (torchrun, gloo): each rank reads its own part, and training runs through."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from data_helpers import make_shards
from train_helpers import tiny_run_tree

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("red", "green", "blue", "yellow")

# For each job (data set, batch size, batches), each rank reads one data epoch of its lanes (2 ranks x 2 workers),
# and the ranks gather what they saw.
READER = textwrap.dedent("""
    import hashlib, json, sys
    import torch, torch.distributed as dist
    from vit_finetune.data.collate import ImageCollator
    from vit_finetune.data.config import AugmentConfig, DataConfig
    from vit_finetune.data.preprocess import PreprocessConfig
    from vit_finetune.data.sources import apply_train_augmentation, load_splits

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = PreprocessConfig(height=16, width=16)
    results = []
    for data, batch, batches in json.loads(sys.argv[1]):
        config = DataConfig(dataset=data, streaming=True, validation_fraction=0.0)
        train = apply_train_augmentation(load_splits(config, seed=0, preprocess=cfg).train, AugmentConfig.none())
        train.configure(rank=rank, world=world, batch_size=batch)
        loader = torch.utils.data.DataLoader(train, batch_size=batch, num_workers=2, collate_fn=ImageCollator(cfg))
        seen = [hashlib.sha1(image.numpy().tobytes()).hexdigest()
                for _, b in zip(range(batches), loader) for image in b["pixel_values"]]
        everyone = [None] * world
        dist.all_gather_object(everyone, seen)
        results.append(everyone)
    if rank == 0:
        json.dump(results, open(sys.argv[2], "w"))
    dist.destroy_process_group()
""")


def torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


def all_fingerprints(data: Path, tmp_path: Path) -> set[str]:
    import hashlib

    from vit_finetune.data.collate import ImageCollator
    from vit_finetune.data.config import DataConfig
    from vit_finetune.data.preprocess import PreprocessConfig
    from vit_finetune.data.sources import load_splits

    cfg = PreprocessConfig(height=16, width=16)
    config = DataConfig(dataset=str(data), validation_fraction=0.0, cache_dir=str(tmp_path / "cache"))
    train = load_splits(config, preprocess=cfg).train
    pixels = ImageCollator(cfg)([train[i] for i in range(len(train))])["pixel_values"]
    return {hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in pixels}


def test_two_ranks_read_disjoint_parts_covering_one_epoch(tmp_path):
    """4 shards for 4 readers: one shard each; 3 shards: every reader keeps every 4th example of all of them."""
    jobs, expected = [], []
    for shards, batch in ((4, 4), (3, 2)):
        data = make_shards(tmp_path / f"wds{shards}", CLASSES, {"train": shards, "test": 1}, per_shard=8)
        per_rank = shards * 8 // 2
        jobs.append((str(data), batch, per_rank // batch))
        expected.append((per_rank, all_fingerprints(data, tmp_path / f"cache{shards}")))
    script = tmp_path / "reader.py"
    script.write_text(READER)
    result = torchrun(str(script), json.dumps(jobs), str(tmp_path / "seen.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    for (first, second), (per_rank, everything) in zip(json.loads((tmp_path / "seen.json").read_text()), expected):
        assert len(first) == len(second) == per_rank
        assert set(first).isdisjoint(second) and set(first) | set(second) == everything


def test_two_process_streaming_training_runs_and_evaluates(tmp_path):
    data = make_shards(tmp_path / "wds", CLASSES, {"train": 4, "test": 1}, per_shard=16)
    tree = tiny_run_tree(data, tmp_path / "run", max_steps=8, eval_strategy="steps", save_strategy="steps",
                         eval_steps=4, save_steps=4, per_device_train_batch_size=4, dataloader_num_workers=1)
    tree["data"] |= {"streaming": True, "max_eval_samples": 8}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    result = torchrun(str(REPO / "scripts" / "train.py"), "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((tmp_path / "run" / "trainer_log.json").read_text())
    assert log[-1]["step"] == 8 and any("eval_accuracy" in entry for entry in log)
    assert (tmp_path / "run" / "checkpoint-8").is_dir()
