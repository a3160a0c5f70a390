"""Bad configs and bad data, as tables: each case fails before training with the culprit named
(exit status 2 from the command line); metrics still compute when a class is absent."""

import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from transformers import EvalPrediction

from data_helpers import make_dataset_dict, make_image_folder
from vit_finetune.commands import EXIT_USER_ERROR
from vit_finetune.config import load_run_config
from vit_finetune.data.errors import DataError
from vit_finetune.evaluation import classification_metrics
from vit_finetune.training.metrics import compute_metrics
from vit_finetune.training.run import check_trainable
from vit_finetune.typed import ConfigError

from .helpers import CLASSES, message_line, run_tree, train_cli, train_tree

# ---- configs: (tree, overrides, fragment of the message) -------------------------------------------------------

BAD_CONFIGS = {
    "not a mapping": (["a", "list"], [], "the config must be a mapping"),
    "unknown section": ({"optimizer": {}}, [], "unknown section(s) ['optimizer']"),
    "unknown training key": ({"training": {"learning_rat": 1e-3}}, [], "learning_rat"),
    "unknown model key": ({"model": {"hiden_size": 8}}, [], "hiden_size"),
    "unknown data key": ({"data": {"datset": "x"}}, [], "datset"),
    "training type": ({"training": {"learning_rate": "three"}}, [], "training.learning_rate: expected a number"),
    "training int type": ({"training": {"seed": "abc"}}, [], "training.seed: expected an integer"),
    "model type": ({"model": {"hidden_size": "big"}}, [], "model.hidden_size: expected an integer"),
    "batch size zero": ({"training": {"per_device_train_batch_size": 0}}, [],
                        "training.per_device_train_batch_size: must be positive"),
    "batch size negative": ({"training": {"per_device_train_batch_size": -8}}, [],
                            "training.per_device_train_batch_size: must be positive"),
    "learning rate zero": ({"training": {"learning_rate": 0}}, [], "training.learning_rate: must be positive"),
    "epochs zero": ({"training": {"num_train_epochs": 0}}, [], "training.num_train_epochs: must be positive"),
    "accumulation zero": ({"training": {"gradient_accumulation_steps": 0}}, [],
                          "training.gradient_accumulation_steps: must be positive"),
    "weight decay negative": ({"training": {"weight_decay": -0.1}}, [], "training.weight_decay: must be >= 0"),
    "workers negative": ({"training": {"dataloader_num_workers": -1}}, [],
                         "training.dataloader_num_workers: must be >= 0"),
    "max steps zero": ({"training": {"max_steps": 0}}, [], "training.max_steps: must be positive"),
    "warmup ratio": ({"training": {"warmup_ratio": 1.5}}, [], "training.warmup_ratio: must be in [0, 1)"),
    "precision": ({"training": {"precision": "fp64"}}, [], "training.precision: must be one of"),
    "pooling": ({"model": {"pooling": "max"}}, [], "model.pooling: must be one of"),
    "arch": ({"model": {"arch": "resnet"}}, [], "model.arch: must be one of"),
    "hidden size zero": ({"model": {"hidden_size": 0}}, [], "model.hidden_size: must be positive"),
    "dropout one": ({"model": {"patch_dropout": 1.0}}, [], "model.patch_dropout: must be in [0, 1)"),
    "image std": ({"model": {"image_std": [0.0, 1.0, 1.0]}}, [], "model.image_std: must be positive"),
    "checkpoint with sizes": ({"model": {"checkpoint": "x", "hidden_size": 8}}, [],
                              "model.hidden_size: applies only to random init"),
    "validation fraction": ({"data": {"validation_fraction": 1.5}}, [], "validation_fraction"),
    "crop": ({"data": {"augment": {"crop": "zoom"}}}, [], "crop"),
    "on bad image": ({"data": {"on_bad_image": "ignore"}}, [], "data.on_bad_image: must be one of"),
    "override value": ({}, ["training.learning_rate=abc"], "training.learning_rate"),
    "override syntax": ({}, ["nonsense"], "override 'nonsense': expected section.key=value"),
    "override into scalar": ({"training": {"seed": 1}}, ["training.seed.x=1"], "seed is not a section"),
    "override python tag": ({}, ["training.seed=!!python/object/apply:os.system [true]"],
                            "override 'training.seed=!!python/object/apply:os.system"),
    "override malformed": ({}, ["training.seed=[1, 2"], "override 'training.seed=[1, 2': not valid YAML"),
    "learning rate nan": ({"training": {"learning_rate": float("nan")}}, [],
                          "training.learning_rate: must be a finite number, got nan"),
    "learning rate inf": ({}, ["training.learning_rate=.inf"], "training.learning_rate: must be a finite number"),
    "learning rate 'inf'": ({}, ["training.learning_rate=inf"], "training.learning_rate: must be a finite number"),
    "weight decay inf": ({"training": {"weight_decay": float("inf")}}, [],
                         "training.weight_decay: must be a finite number, got inf"),
    "weight decay nan": ({}, ["training.weight_decay=nan"], "training.weight_decay: must be a finite number"),
    "warmup ratio nan": ({"training": {"warmup_ratio": float("nan")}}, [],
                         "training.warmup_ratio: must be a finite number"),
    "warmup steps inf": ({"training": {"warmup_steps": float("inf")}}, [], "training.warmup_steps"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_refused_naming_the_key(tmp_path, case):
    tree, overrides, fragment = BAD_CONFIGS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError) as caught:
        load_run_config(path, overrides)
    assert fragment in str(caught.value)


def test_bad_config_exits_2_naming_key_and_file(data_dir, tmp_path, capsys):
    tree = run_tree(data_dir, tmp_path / "run", learning_rate="three")
    assert train_cli(tree, tmp_path / "bad.yaml") == EXIT_USER_ERROR
    last_line = message_line(capsys.readouterr().err)
    assert "training.learning_rate" in last_line and str(tmp_path / "bad.yaml") in last_line
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on CUDA")
def test_fp16_without_cuda_exits_2_naming_the_key(data_dir, tmp_path, capsys):
    tree = run_tree(data_dir, tmp_path / "run", precision="fp16")
    assert train_cli(tree, tmp_path / "fp16.yaml") == EXIT_USER_ERROR
    assert message_line(capsys.readouterr().err).startswith("error: training.precision fp16: needs a CUDA GPU")
    assert not (tmp_path / "run").exists()


def test_invalid_training_arguments_combination_is_a_config_error(data_dir, tmp_path):
    tree = run_tree(data_dir, tmp_path / "run", save_strategy="steps", save_steps=3)  # best model needs eval == save
    with pytest.raises(ConfigError, match="training: .*load_best_model_at_end"):
        train_tree(tree)


# ---- data: a function that spoils a copy of the good image folder, and the message ------------------------------

def _remove(root):
    shutil.rmtree(root)


def _empty_test_split(root):  # a save_to_disk DatasetDict whose test split has no rows
    splits = make_dataset_dict(classes=CLASSES, per_class=8)
    splits["test"] = splits["test"].select([])
    shutil.rmtree(root)
    splits.save_to_disk(str(root))


def _single_class(root):
    for split in ("train", "test"):
        for name in CLASSES[1:]:
            shutil.rmtree(root / split / name)


def _class_only_in_train(root):
    shutil.rmtree(root / "test" / CLASSES[-1])


def _empty_class_folder(root):
    for image in (root / "train" / "blue").iterdir():
        image.unlink()


def _unreadable_image(root):
    (root / "train" / "red" / "0000.png").write_bytes(b"not a png")


def _no_train_split(root):  # (a data set with only a train split gets its test split carved out instead)
    shutil.rmtree(root / "train")


def _symlink_loop(root):  # open() fails with ELOOP
    (root / "train" / "red" / "loop.jpg").symlink_to("loop.jpg")


def _empty_directory(root):
    shutil.rmtree(root)
    root.mkdir()


BAD_DATA = {
    "missing directory": (_remove, "data set directory does not exist"),
    "empty directory": (_empty_directory, "empty directory"),
    "no train split": (_no_train_split, "no split folder ['train']"),
    "empty class folder": (_empty_class_folder, "blue: class folder has no images"),
    "label mismatch": (_class_only_in_train, "classes differ between train"),
    "unreadable image": (_unreadable_image, "1 unreadable image(s)"),
    "symlink loop": (_symlink_loop, "1 unreadable image(s)"),
    "single class": (_single_class, "a classifier needs at least 2 classes, found ['red']"),
    "empty test split": (_empty_test_split, "an empty split?"),
}


@pytest.mark.parametrize("spoil, fragment", BAD_DATA.values(), ids=BAD_DATA.keys())
def test_bad_data_is_refused_naming_the_culprit(tmp_path, spoil, fragment):
    root = make_image_folder(tmp_path / "data", classes=CLASSES, per_class=4)
    spoil(root)
    with pytest.raises(DataError) as caught:
        train_tree(run_tree(root, tmp_path / "run"))
    assert fragment in str(caught.value)
    assert not (tmp_path / "run").exists()  # nothing written, not even the output folder


@pytest.mark.parametrize("empty", ["train", "test"])
def test_empty_split_is_refused_naming_it(empty):
    splits = SimpleNamespace(label_names=list(CLASSES), train=[1, 2], test=[1, 2])
    setattr(splits, empty, [])
    with pytest.raises(DataError, match=f"data: the {empty} split is empty"):
        check_trainable(splits, "data")


def test_bad_data_exits_2_from_the_command_line(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", classes=CLASSES, per_class=4)
    _single_class(root)
    assert train_cli(run_tree(root, tmp_path / "run"), tmp_path / "c.yaml") == EXIT_USER_ERROR
    assert "at least 2 classes" in message_line(capsys.readouterr().err)


# ---- a class missing from validation / evaluation: metrics still compute ----------------------------------------

def test_class_missing_from_validation_still_trains_and_evaluates(tmp_path):
    root = make_image_folder(tmp_path / "data", classes=CLASSES, per_class=12)
    for image in sorted((root / "train" / "yellow").iterdir())[1:]:
        image.unlink()  # 1 yellow training image: the stratified 20 % validation split has none
    result = train_tree(run_tree(root, tmp_path / "run", num_train_epochs=1))
    assert 0.0 <= result.metrics["best_validation_accuracy"] <= 1.0
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0


def test_metrics_with_absent_classes_handle_zero_division():
    logits = np.eye(4, dtype=np.float32)[[0, 0, 1, 1]]  # predicts classes 0 and 1 only
    labels = np.array([0, 1, 1, 1])  # classes 2 and 3 absent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = classification_metrics(logits, labels, list(CLASSES))
        accuracy = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
        empty = compute_metrics(EvalPrediction(predictions=np.zeros((0, 4)), label_ids=np.zeros(0, dtype=int)))
    assert metrics["accuracy"] == accuracy["accuracy"] == 0.75
    assert metrics["balanced_accuracy"] == accuracy["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert empty == {"accuracy": 0.0, "balanced_accuracy": 0.0}
    for name in CLASSES[2:]:
        assert metrics["per_class"][name] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert metrics["confusion_matrix"][2] == [0, 0, 0, 0]
