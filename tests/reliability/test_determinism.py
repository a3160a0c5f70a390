"""The same seed twice on CPU gives bitwise-equal weights and metrics (with and without loader workers);
another seed gives other weights."""

import json

import pytest
import torch

from train_helpers import weights

from .helpers import assert_same_weights, run_tree, train_tree

TIMING_KEYS = ("runtime", "per_second")  # wall-clock metrics, the only ones allowed to differ


def deterministic_metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not any(part in k for part in TIMING_KEYS)}


def training_log(output_dir) -> list[dict]:
    log = json.loads((output_dir / "trainer_log.json").read_text())
    return [deterministic_metrics(entry) for entry in log]


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_twice_is_bitwise_equal(data_dir, tmp_path, workers):
    results = [train_tree(run_tree(data_dir, tmp_path / f"run{i}", num_train_epochs=1, dataloader_num_workers=workers))
               for i in range(2)]
    assert_same_weights(tmp_path / "run0", tmp_path / "run1")
    assert deterministic_metrics(results[0].metrics) == deterministic_metrics(results[1].metrics)
    assert training_log(tmp_path / "run0") == training_log(tmp_path / "run1")


def test_another_seed_gives_other_weights(reference, data_dir, tmp_path):
    train_tree(run_tree(data_dir, tmp_path / "run", seed=1))
    expected, actual = weights(reference), weights(tmp_path / "run")
    assert not torch.equal(expected["classifier.weight"], actual["classifier.weight"])
