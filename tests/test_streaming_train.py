"""Training on a stream: epochs become steps, and a resumed run continues at the stream's position."""

import json

import pytest
import torch

from data_helpers import make_shards
from train_helpers import tiny_run_tree, weights
from vit_finetune.config import run_config_from_dict
from vit_finetune.evaluation import evaluate_checkpoint
from vit_finetune.training.run import train

CLASSES = ("red", "green", "blue", "yellow")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("wds"), CLASSES, {"train": 3, "test": 1}, per_shard=16)


def stream_tree(shards, output_dir, workers=0, **training):
    tree = tiny_run_tree(shards, output_dir, dataloader_num_workers=workers, load_best_model_at_end=False, **training)
    tree["data"] |= {"streaming": True, "validation_fraction": 0.0, "shuffle_buffer_size": 10,
                     "augment": {"crop": "none", "horizontal_flip": False}}  # no random draws: bitwise comparable
    return tree


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_stream_gives_the_uninterrupted_weights(shards, tmp_path, workers):
    """8 steps of batch 8 cross a data epoch (48 examples); resuming at step 3 must read on from example 24."""
    steps = dict(max_steps=8, save_strategy="steps", save_steps=3, eval_strategy="no")
    train(run_config_from_dict(stream_tree(shards, tmp_path / "full", workers, **steps)))
    resumed = stream_tree(shards, tmp_path / "resumed", workers, **steps)
    resumed["training"]["resume_from_checkpoint"] = str(tmp_path / "full" / "checkpoint-3")
    train(run_config_from_dict(resumed))
    expected, actual = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert not torch.equal(weights(tmp_path / "full" / "checkpoint-3")["classifier.weight"], expected["classifier.weight"])


def test_epochs_of_a_known_stream_become_steps_with_evaluation_each_epoch(shards, tmp_path):
    make_shards(shards.parent / "own-validation", CLASSES, {"train": 3, "validation": 1, "test": 1}, per_shard=16)
    tree = stream_tree(shards.parent / "own-validation", tmp_path / "run", num_train_epochs=2,
                       per_device_train_batch_size=8)
    tree["training"] |= {"eval_strategy": "epoch", "save_strategy": "epoch"}
    result = train(run_config_from_dict(tree))
    log = json.loads((tmp_path / "run" / "trainer_log.json").read_text())
    assert log[-1]["step"] == 12  # 2 x 48 examples / 8
    assert [entry["step"] for entry in log if "eval_accuracy" in entry] == [6, 12]
    assert sorted(path.name for path in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    assert "test_accuracy" in result.metrics and result.metrics["best_validation_accuracy"] is not None
    evaluated = evaluate_checkpoint(tmp_path / "run", output_dir=tmp_path / "eval")  # streams the test split again
    assert evaluated.results["num_images"] == 16
    assert evaluated.results["accuracy"] == pytest.approx(result.metrics["test_accuracy"], abs=1e-6)
