"""Layouts and splits, cached and streaming: per-split folders, carving, own validation splits, metadata
files, shard patterns, multi-label data, and the errors that name the culprit."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml

from data_helpers import class_examples, make_dataset_dict, make_image_folder, make_shards, write_tar_shard
from train_helpers import tiny_run_tree
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.config import AugmentConfig, DataConfig
from vit_finetune.data.errors import DataError
from vit_finetune.data.preprocess import PreprocessConfig
from vit_finetune.data.shards import expand_braces
from vit_finetune.data.sources import apply_train_augmentation, len_or_none, load_splits
from vit_finetune.typed import ConfigError

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("red", "green", "blue")
CFG = PreprocessConfig(height=16, width=16)


def load(tmp_path, streaming=False, **kwargs):
    kwargs.setdefault("validation_fraction", 0.0)
    config = DataConfig(cache_dir=str(tmp_path / "cache"), streaming=streaming, **kwargs)
    return load_splits(config, seed=0, preprocess=CFG)


def all_labels(split) -> list:
    """Every label of a split, through a DataLoader (works for cached, lazy and streaming eval splits)."""
    loader = torch.utils.data.DataLoader(split, batch_size=4, collate_fn=ImageCollator(CFG))
    return torch.cat([batch["labels"] for batch in loader]).tolist()


# ---- per-split folders -----------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True])
def test_train_validation_and_test_dirs(tmp_path, streaming):
    root = make_image_folder(tmp_path / "data", CLASSES, per_class=6, splits=("train", "val", "eval"))
    splits = load(tmp_path, streaming, train_dir=str(root / "train"), validation_dir=str(root / "val"),
                  test_dir=str(root / "eval"))
    assert splits.label_names == sorted(CLASSES)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (18, 9, 9)


@pytest.mark.parametrize("streaming", [False, True])
def test_shard_dirs_per_split(tmp_path, streaming):
    make_shards(tmp_path / "a", CLASSES, {"part": 2}, per_shard=6)
    make_shards(tmp_path / "b", CLASSES, {"part": 1}, per_shard=6, seed=1)
    splits = load(tmp_path, streaming, train_dir=str(tmp_path / "a"), test_dir=str(tmp_path / "b"))
    assert splits.label_names == ["0", "1", "2"] and all_labels(splits.test) == [0, 1, 2] * 2


def test_missing_split_folder_is_named(tmp_path):
    root = make_image_folder(tmp_path / "data", CLASSES, per_class=4)
    with pytest.raises(DataError, match=f"data.test_dir: {tmp_path / 'nowhere'} does not exist"):
        load(tmp_path, train_dir=str(root / "train"), test_dir=str(tmp_path / "nowhere"))
    shutil.rmtree(root / "train")
    with pytest.raises(DataError, match=rf"{root}: no split folder \['train'\]"):
        load(tmp_path, dataset=str(root))


# ---- carving and own validation splits --------------------------------------------------------


def test_train_only_data_set_gets_a_stratified_seeded_test_split(tmp_path, caplog):
    root = make_image_folder(tmp_path / "data", CLASSES, per_class=20, splits=("train",))
    with caplog.at_level(logging.WARNING):
        splits = load(tmp_path, dataset=str(root), validation_fraction=0.1, test_fraction=0.15)
    assert "has only a 'train' split: carving 15% of it out as the test split" in caplog.text
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (45, 6, 9)
    assert np.bincount(splits.test.labels).tolist() == [3, 3, 3] and np.bincount(splits.validation.labels).tolist() == [2, 2, 2]
    parts = [set(split.sources) for split in (splits.train, splits.validation, splits.test)]
    assert sum(map(len, parts)) == len(set.union(*parts)) == 60
    again = load(tmp_path, dataset=str(root), validation_fraction=0.1, test_fraction=0.15)
    assert again.test.sources == splits.test.sources


def test_train_only_shards_are_carved_by_seeded_key_hash_when_streaming(tmp_path):
    make_shards(tmp_path / "wds", CLASSES, {"train": 4}, per_shard=30)
    splits = load(tmp_path, True, dataset=str(tmp_path / "wds"), validation_fraction=0.2, test_fraction=0.2)
    test, validation = all_labels(splits.test), all_labels(splits.validation)
    assert 10 <= len(test) <= 40 and 10 <= len(validation) <= 40  # 24 each expected of 120
    assert all_labels(load(tmp_path, True, dataset=str(tmp_path / "wds"), validation_fraction=0.2,
                           test_fraction=0.2).test) == test
    seen = set()
    for split in (splits.test, splits.validation):
        loader = torch.utils.data.DataLoader(split, batch_size=8, collate_fn=ImageCollator(CFG))
        seen |= {image.numpy().tobytes() for batch in loader for image in batch["pixel_values"]}
    train = apply_train_augmentation(splits.train, AugmentConfig.none())
    loader = torch.utils.data.DataLoader(train, batch_size=8, collate_fn=ImageCollator(CFG))
    first_epoch = [image.numpy().tobytes() for _, batch in zip(range(5), loader) for image in batch["pixel_values"]]
    assert seen.isdisjoint(first_epoch)


@pytest.mark.parametrize("streaming", [False, True])
def test_own_validation_split_is_used_for_model_selection(tmp_path, streaming):
    root = make_image_folder(tmp_path / "data", CLASSES, per_class=6, splits=("train", "validation", "test"))
    splits = load(tmp_path, streaming, dataset=str(root), validation_fraction=0.5)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (18, 9, 9)  # nothing carved
    assert all("/validation/" in source for source in splits.validation.sources)


def test_validation_split_names_another_split(tmp_path):
    data = make_dataset_dict(CLASSES, per_class=6)
    data["dev"] = data["test"]
    data.save_to_disk(str(tmp_path / "saved"))
    splits = load(tmp_path, dataset=str(tmp_path / "saved"), validation_split="dev")
    assert len(splits.validation) == 9 and len(splits.train) == 18
    with pytest.raises(DataError, match=r"no split \['valid'\] for data.validation_split \(found \['dev', 'test', 'train'\]\)"):
        load(tmp_path, dataset=str(tmp_path / "saved"), validation_split="valid")


def test_missing_eval_split_beside_other_splits_is_an_error(tmp_path):
    make_image_folder(tmp_path / "data", CLASSES, per_class=4, splits=("train", "validation"))
    with pytest.raises(DataError, match=r"no split \['test'\] \(found \['train', 'validation'\]\)"):
        load(tmp_path, dataset=str(tmp_path / "data"))


# ---- metadata files, label columns -------------------------------------------------------------


def write_metadata_folder(root: Path, kind: str, multi: bool) -> Path:
    """`root/{train,test}/<n>.png` + metadata.<kind>: colour names as labels; multi: two colours per image."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 6)):
        folder = root / split
        folder.mkdir(parents=True)
        records = []
        for key, label, png in class_examples(CLASSES, count, 16, rng):
            (folder / f"{key}.png").write_bytes(png)
            names = [CLASSES[label], CLASSES[(label + 1) % 3]] if multi else CLASSES[label]
            records.append({"file_name": f"{key}.png", "labels" if multi else "label": names})
        if kind == "jsonl":
            (folder / "metadata.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
        else:
            column = "labels" if multi else "label"
            cells = [" ".join(r[column]) if multi else r[column] for r in records]
            (folder / "metadata.csv").write_text(f"file_name,{column}\n" + "".join(
                f"{r['file_name']},{cell}\n" for r, cell in zip(records, cells)))
    return root


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
@pytest.mark.parametrize("streaming", [False, True])
def test_metadata_file_labels(tmp_path, kind, streaming):
    root = write_metadata_folder(tmp_path / "data", kind, multi=False)
    splits = load(tmp_path, streaming, dataset=str(root))
    assert splits.label_names == ["blue", "green", "red"]  # sorted names
    assert all_labels(splits.test) == [2, 1, 0, 2, 1, 0]  # red, green, blue in turn


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
@pytest.mark.parametrize("streaming", [False, True])
def test_multi_label_metadata_gives_multi_hot_float_labels(tmp_path, kind, streaming):
    root = write_metadata_folder(tmp_path / "data", kind, multi=True)
    splits = load(tmp_path, streaming, dataset=str(root), task="multi_label")
    assert splits.task == "multi_label" and splits.label_names == ["blue", "green", "red"]
    loader = torch.utils.data.DataLoader(splits.test, batch_size=3, collate_fn=ImageCollator(CFG))
    labels = next(iter(loader))["labels"]
    assert labels.dtype == torch.float32 and labels.tolist() == [[0, 1, 1], [1, 1, 0], [1, 0, 1]]
    if kind == "jsonl":  # a CSV cell "red green" is also a valid single class name
        with pytest.raises(DataError, match="lists; set data.task: multi_label"):
            load(tmp_path, streaming, dataset=str(root))


@pytest.mark.parametrize("streaming", [False, True])
def test_multi_label_class_label_lists(tmp_path, streaming):
    data = make_dataset_dict(CLASSES, per_class=4)
    for name in ("train", "test"):
        tags = [[label, (label + 2) % 3] for label in data[name]["label"]]
        data[name] = data[name].remove_columns("label").add_column(
            "tags", tags, feature=datasets.List(datasets.ClassLabel(names=list(CLASSES))))
    data.save_to_disk(str(tmp_path / "saved"))
    splits = load(tmp_path, streaming, dataset=str(tmp_path / "saved"), task="multi_label")
    assert splits.label_names == list(CLASSES) and all_labels(splits.test)[:3] == [[1, 0, 1], [1, 0, 1], [1, 1, 0]]
    with pytest.raises(DataError, match="holds lists; set data.task: multi_label"):
        load(tmp_path, streaming, dataset=str(tmp_path / "saved"))


def test_integer_label_column_becomes_classes(tmp_path):
    data = make_dataset_dict(CLASSES, per_class=4)
    data.cast_column("label", datasets.Value("int64")).save_to_disk(str(tmp_path / "saved"))
    assert load(tmp_path, dataset=str(tmp_path / "saved")).label_names == ["0", "1", "2"]


def test_metadata_errors_name_file_and_line(tmp_path):
    root = write_metadata_folder(tmp_path / "data", "jsonl", multi=False)
    metadata = root / "train" / "metadata.jsonl"
    metadata.write_text(metadata.read_text() + '{"file_name": "../../etc/passwd", "label": "red"}\n')
    with pytest.raises(DataError, match=r"metadata.jsonl:13: file_name '../../etc/passwd' must be a path inside"):
        load(tmp_path, dataset=str(root))
    metadata.write_text('{"file_name": "missing.png", "label": "red"}\n')
    with pytest.raises(DataError, match=r"metadata.jsonl:1: .*missing.png does not exist"):
        load(tmp_path, dataset=str(root))


# ---- shard patterns and bad shards --------------------------------------------------------------


def test_brace_and_glob_patterns_name_shards():
    assert expand_braces("s/train-{008..010}.tar") == ["s/train-008.tar", "s/train-009.tar", "s/train-010.tar"]
    assert expand_braces("{a,b}-{0..1}") == ["a-0", "a-1", "b-0", "b-1"]


@pytest.mark.parametrize("pattern, test_size", [("{root}/*.tar", 6), ("{root}/train-{{00000..00001}}.tar", None)])
def test_shard_pattern_as_data_set(tmp_path, pattern, test_size):
    root = make_shards(tmp_path / "wds", CLASSES, {"train": 2, "test": 1}, per_shard=6)
    splits = load(tmp_path, True, dataset=pattern.format(root=root))
    assert splits.label_names == ["0", "1", "2"]
    assert len_or_none(splits.test) == test_size  # the brace list names train shards only: test is carved


def spoil_shards(root: Path, how: str) -> Path:
    make_shards(root, CLASSES, {"train": 2, "test": 1}, per_shard=4)
    if how == "empty":
        write_tar_shard(root / "train-00001.tar", [])
    else:
        examples = class_examples(CLASSES, 4, 16, np.random.default_rng(0))
        examples[2] = (examples[2][0], None, examples[2][2])
        write_tar_shard(root / "train-00001.tar", examples)
    return root / "train-00001.tar"


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("how, message", [("empty", "empty shard"), ("no label", "sample '000002' has no label")])
def test_bad_shards_are_refused_naming_them(tmp_path, streaming, how, message):
    shard = spoil_shards(tmp_path / "wds", how)
    with pytest.raises(DataError, match=f"{shard}: {message}"):
        load(tmp_path, streaming, dataset=str(tmp_path / "wds"))


def test_bad_shard_exits_2_naming_it(tmp_path):
    shard = spoil_shards(tmp_path / "wds", "empty")
    tree = tiny_run_tree(tmp_path / "wds", tmp_path / "run")
    tree["data"]["streaming"] = True
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(config)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and f"{shard}: empty shard" in result.stderr


# ---- config ---------------------------------------------------------------------------------------


def test_streaming_config_checks():
    from vit_finetune.config import run_config_from_dict

    with pytest.raises(ConfigError, match="training.max_steps: required with data.streaming for the hub data set"):
        run_config_from_dict({"data": {"dataset": "owner/name", "streaming": True}})
    assert run_config_from_dict({"data": {"dataset": "owner/name", "streaming": True},
                                 "training": {"max_steps": 10}}).data.streaming
    for bad, key in (({"test_fraction": 0}, "test_fraction"), ({"task": "multi"}, "task"),
                     ({"validation_dir": "x"}, "validation_dir"), ({"shuffle_buffer_size": 0}, "shuffle_buffer_size"),
                     ({"validation_split": "test"}, "validation_split")):
        with pytest.raises(ValueError, match=f"data.{key}"):
            DataConfig(**bad)
