"""Imbalanced data: on a generated 95:5 data set, training.class_weights: balanced and data.sampler: balanced
each raise the minority class's recall and the balanced accuracy over the default training."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train_helpers import tiny_run_tree
from vit_finetune.config import run_config_from_dict
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.preprocess import PreprocessConfig
from vit_finetune.data.sources import load_splits
from vit_finetune.modeling import load_classifier
from vit_finetune.training.run import train

CLASSES = ("common", "rare")  # label ids 0, 1 (sorted names)
MEAN_GREY = {"common": 110.0, "rare": 140.0}  # per-image brightness ~ N(mean, 25): the classes overlap


def write_overlapping_classes(root: Path, counts: dict[str, dict[str, int]], seed: int = 0) -> Path:
    """`root/<split>/<class>/<i>.png`: 32-px grey images whose brightness is drawn around the class's mean, so the
    best boundary between the classes depends on how often each one occurs in training."""
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for name, count in per_class.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                level = rng.normal(MEAN_GREY[name], 25.0)
                pixels = np.clip(level + rng.normal(0.0, 20.0, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode="RGB").save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    counts = {"train": {"common": 285, "rare": 15}, "test": {"common": 150, "rare": 150}}
    return write_overlapping_classes(tmp_path_factory.mktemp("imbalanced"), counts)


def recall_per_class(model_dir: Path, data_dir: Path) -> np.ndarray:
    """Recall of each class on the (balanced) test split, from the saved model, computed by hand."""
    test = load_splits(run_config_from_dict({"data": {"dataset": str(data_dir), "validation_fraction": 0}}).data).test
    batch = ImageCollator(PreprocessConfig.from_pretrained(model_dir))([test[i] for i in range(len(test))])
    with torch.no_grad():
        predictions = load_classifier(model_dir)(batch["pixel_values"]).logits.argmax(-1)
    labels = batch["labels"]
    return np.array([(predictions[labels == k] == k).float().mean().item() for k in range(len(CLASSES))])


def train_imbalanced(data_dir: Path, output_dir: Path, class_weights=None, sampler: str = "random") -> dict:
    tree = tiny_run_tree(data_dir, output_dir, num_train_epochs=3, per_device_train_batch_size=16,
                         class_weights=class_weights)
    tree["model"]["attn_implementation"] = "sdpa"  # no start-up timing probe
    tree["data"].update(validation_fraction=0, sampler=sampler, augment={"crop": "none"})
    metrics = train(run_config_from_dict(tree)).metrics
    return {"balanced_accuracy": metrics["test_balanced_accuracy"], "recall": recall_per_class(output_dir, data_dir)}


def test_class_weights_and_balanced_sampler_raise_the_minority_recall(data_dir, tmp_path):
    default = train_imbalanced(data_dir, tmp_path / "default")
    weighted = train_imbalanced(data_dir, tmp_path / "weighted", class_weights="balanced")
    resampled = train_imbalanced(data_dir, tmp_path / "resampled", sampler="balanced")
    print({"default": default, "class_weights=balanced": weighted, "sampler=balanced": resampled})
    assert default["balanced_accuracy"] == pytest.approx(default["recall"].mean(), abs=1e-6)  # the test split is 150:150
    for balanced in (weighted, resampled):
        assert balanced["recall"][1] >= default["recall"][1] + 0.15
        assert balanced["balanced_accuracy"] >= default["balanced_accuracy"] + 0.05


def test_a_stream_refuses_what_needs_every_training_label_up_front():
    """A stream's labels are read with its images: balancing by them is refused by name, a list of weights works."""
    from vit_finetune.config import load_run_config
    from vit_finetune.training.losses import resolve_class_weights
    from vit_finetune.typed import ConfigError

    with pytest.raises(ConfigError, match="data.sampler"):
        load_run_config("cifar10-tiny", ["data.dataset=./shards", "data.streaming=true", "data.sampler=balanced"])
    with pytest.raises(ConfigError, match="class_weights=balanced"):
        resolve_class_weights("balanced", None, ["a", "b"])
    assert resolve_class_weights([1.0, 3.0], None, ["a", "b"]).tolist() == [1.0, 3.0]
