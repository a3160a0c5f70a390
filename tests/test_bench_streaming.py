"""The streaming benchmark on a tiny generated data set: the generator's layout and both timed paths."""

import tarfile

from benchmarks.streaming import NUM_CLASSES, SIDE_RANGE, cpu_cost, generate, throughput
from vit_finetune.data.images import open_image


def test_generator_writes_the_same_jpegs_as_imagefolder_and_shards(tmp_path):
    root = generate(tmp_path / "gen", num_images=50, shard_size=20)
    shards = sorted(path.name for path in (root / "shards").iterdir())
    assert shards == ["test-00000.tar", "train-00000.tar", "train-00001.tar", "train-00002.tar"]
    images = sorted((root / "images" / "train").rglob("*.jpg"))
    assert len(images) == 50 and len({path.parent.name for path in images}) == NUM_CLASSES
    with tarfile.open(root / "shards" / "train-00000.tar") as tar:
        names = tar.getnames()
        assert names[:2] == ["00000000.jpg", "00000000.cls"]
        label = int(tar.extractfile("00000000.cls").read())
        jpeg = tar.extractfile("00000000.jpg").read()
    assert (root / "images" / "train" / f"class{label}" / "00000000.jpg").read_bytes() == jpeg
    assert all(SIDE_RANGE[0] <= side <= SIDE_RANGE[1] for side in open_image(jpeg).size)


def test_throughput_times_both_paths(tmp_path):
    root = generate(tmp_path / "gen", num_images=40, shard_size=20)
    result = throughput(root, workers=[0], images=16, size=64, batch_size=8, rounds=1, large_images=2)
    assert result["train_examples"] == 40 and result["skip_records_per_s"] > 0 and result["large_jpegs"]["draft_ms"] > 0
    row = result["rows"][0]
    assert row["ours_images_per_s"] > 0 and row["naive_images_per_s"] > 0


def test_cpu_cost_of_both_paths(tmp_path):
    root = generate(tmp_path / "gen", num_images=40, shard_size=20)
    result = cpu_cost(root, images=16, size=64, batch_size=8)
    ours, naive = result["ours_cpu_ms_per_image"], result["naive_cpu_ms_per_image"]
    assert ours > 0 and naive > 0 and result["naive_over_ours"] == naive / ours


def test_memory_run_config_trains_on_a_tiny_set(tmp_path):
    """The memory part's run config (our defaults' best-model tracking, no validation split, step checkpoints)."""
    from benchmarks.streaming import _memory_run_tree
    from vit_finetune.config import run_config_from_dict
    from vit_finetune.training.run import train

    root = generate(tmp_path / "gen", num_images=40, shard_size=20)
    tree = _memory_run_tree(root / "shards", tmp_path / "run", steps=4, batch_size=4, workers=0)
    tree["model"] |= {"image_size": 64, "patch_size": 16}
    result = train(run_config_from_dict(tree))
    assert result.metrics["test_samples_per_second"] > 0 and (tmp_path / "run" / "checkpoint-4").is_dir()
