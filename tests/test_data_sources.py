"""load_splits: sources, column detection, splits, the decode cache, augmentation and bad input."""

import logging
import os
import shutil

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from data_helpers import copy_cifar10_slice, make_dataset_dict, make_image_folder, needs_cifar10
from vit_finetune.data import layouts, sources
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.config import AugmentConfig, DataConfig
from vit_finetune.data.errors import DataError
from vit_finetune.data.images import open_image
from vit_finetune.data.preprocess import PreprocessConfig, preprocess_images
from vit_finetune.data.sources import apply_train_augmentation, load_splits, stratified_sample



def config(dataset, tmp_path, **kwargs) -> DataConfig:
    kwargs.setdefault("validation_fraction", 0.25)
    return DataConfig(dataset=str(dataset), cache_dir=str(tmp_path / "cache"), **kwargs)


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "data", classes=("red", "green", "blue"), per_class=12)


@pytest.fixture
def decode_counter(monkeypatch):
    calls = []
    real = sources.open_image
    monkeypatch.setattr(sources, "open_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


# ---- sources and columns -----------------------------------------------------------------------


def test_imagefolder(folder, tmp_path):
    splits = load_splits(config(folder, tmp_path))
    assert splits.label_names == ["blue", "green", "red"]  # sorted folder names
    assert splits.id2label == {0: "blue", 1: "green", 2: "red"} and splits.label2id["red"] == 2
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (27, 9, 18)
    example = splits.train[0]
    assert example["pixels"].dtype == torch.uint8 and example["pixels"].shape == (3, 32, 32)
    assert isinstance(example["labels"], int)
    assert splits.test.sources[0].endswith(os.path.join("test", "blue", "0000.png"))


def test_save_to_disk(tmp_path):
    make_dataset_dict().save_to_disk(str(tmp_path / "saved"))
    splits = load_splits(config(tmp_path / "saved", tmp_path))
    assert splits.label_names == ["red", "green", "blue"]  # ClassLabel order, as stored
    assert splits.train[0]["pixels"].shape == (3, 16, 16) and splits.test.sources[0] == "test[0]"


def test_hub_id_goes_through_load_dataset(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(layouts, "load_dataset", lambda path, **kw: asked.append((path, kw)) or make_dataset_dict())
    splits = load_splits(DataConfig(cache_dir=str(tmp_path / "cache"), validation_fraction=0.25,
                                    dataset_config_name="plain_text", revision="v1.0"))
    assert [path for path, _ in asked] == ["uoft-cs/cifar10"]
    assert asked[0][1]["name"] == "plain_text" and asked[0][1]["revision"] == "v1.0"
    assert splits.label_names == ["red", "green", "blue"] and len(splits.train) == 18


def test_hub_failure_is_a_data_error(tmp_path, monkeypatch):
    def offline(path, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(layouts, "load_dataset", offline)
    with pytest.raises(DataError, match="owner/missing: not a local directory.*hub unreachable"):
        load_splits(config("owner/missing", tmp_path))


def test_explicit_columns_and_missing_columns(tmp_path):
    data = make_dataset_dict(image_column="picture", label_column="target")
    data["train"] = data["train"].add_column("other", [0] * len(data["train"]))
    data.save_to_disk(str(tmp_path / "saved"))
    assert load_splits(config(tmp_path / "saved", tmp_path, image_column="picture", label_column="target")).label_names
    with pytest.raises(DataError, match="image_column 'photo' not in columns"):
        load_splits(config(tmp_path / "saved", tmp_path, image_column="photo"))


def test_no_image_or_label_feature(tmp_path):
    data = make_dataset_dict(label_column="target")
    data.cast_column("target", datasets.Value("int64")).save_to_disk(str(tmp_path / "nolabel"))
    with pytest.raises(DataError, match="no label column in columns.*set data.label_column"):
        load_splits(config(tmp_path / "nolabel", tmp_path))
    data.remove_columns("img").save_to_disk(str(tmp_path / "noimage"))
    with pytest.raises(DataError, match="no image column"):
        load_splits(config(tmp_path / "noimage", tmp_path))


# ---- splits ------------------------------------------------------------------------------------


def test_stratified_sample_proportions_and_seeds():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    sample = stratified_sample(labels, 40, seed=1)
    assert np.bincount(labels[sample]).tolist() == [20, 10, 6, 4]
    assert np.array_equal(sample, stratified_sample(labels, 40, seed=1))
    assert not np.array_equal(sample, stratified_sample(labels, 40, seed=2))


def test_validation_split_stratified_seeded_disjoint(folder, tmp_path):
    first, again, other = (load_splits(config(folder, tmp_path), seed=s) for s in (0, 0, 1))
    assert np.bincount(first.validation.labels).tolist() == [3, 3, 3]
    assert set(first.train.sources).isdisjoint(first.validation.sources)
    assert len(set(first.train.sources) | set(first.validation.sources)) == 36
    assert first.validation.sources == again.validation.sources
    assert first.validation.sources != other.validation.sources


def test_max_samples_are_stratified_subsets(folder, tmp_path):
    splits = load_splits(config(folder, tmp_path, max_train_samples=6, max_eval_samples=3))
    assert np.bincount(splits.train.labels).tolist() == [2, 2, 2]
    assert np.bincount(splits.test.labels).tolist() == [1, 1, 1] and len(splits.validation) == 3


def test_no_validation_when_fraction_is_zero(folder, tmp_path):
    splits = load_splits(config(folder, tmp_path, validation_fraction=0.0))
    assert splits.validation is None and len(splits.train) == 36


# ---- the decode cache --------------------------------------------------------------------------


def test_second_load_does_not_decode(folder, tmp_path, decode_counter):
    load_splits(config(folder, tmp_path))
    assert len(decode_counter) == 54
    decode_counter.clear()
    splits = load_splits(config(folder, tmp_path), seed=7)
    assert decode_counter == [] and len(splits.train) == 27
    assert len(list((tmp_path / "cache" / "vit_finetune_decoded").glob("decoded-*.arrow"))) == 2


def test_changed_file_invalidates_cache(folder, tmp_path, decode_counter):
    load_splits(config(folder, tmp_path))
    decode_counter.clear()
    path = folder / "train" / "red" / "0000.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    load_splits(config(folder, tmp_path))
    assert len(decode_counter) == 36  # the train split again; test is unchanged


# ---- mixed sizes and prediction parity -----------------------------------------------------------


def test_mixed_sizes_resized_at_decode_and_prediction_matches(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class=4)
    Image.new("RGB", (50, 40), (200, 10, 10)).save(root / "train" / "red" / "big.png")
    with pytest.raises(DataError, match="differ in size.*preprocess="):
        load_splits(config(root, tmp_path))
    cfg = PreprocessConfig(height=24, width=24)
    splits = load_splits(config(root, tmp_path, validation_fraction=0.0), preprocess=cfg)
    index = splits.train.sources.index(str(root / "train" / "red" / "big.png"))
    example = splits.train[index]
    assert example["pixels"].shape == (3, 24, 24)
    batch = ImageCollator(cfg)([example])
    assert torch.equal(batch["pixel_values"], preprocess_images([open_image(splits.train.sources[index])], cfg))


# ---- augmentation ------------------------------------------------------------------------------


def loader_batches(dataset, seed):
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=ImageCollator(PreprocessConfig(height=32, width=32)))
    return [batch["pixel_values"] for batch in loader]


def test_augmentation_deterministic_under_seed_and_off_for_eval(folder, tmp_path):
    splits = load_splits(config(folder, tmp_path))
    train = apply_train_augmentation(splits.train, AugmentConfig(crop="random_resized", scale=(0.3, 1.0)))
    first, again, other = loader_batches(train, 0), loader_batches(train, 0), loader_batches(train, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert splits.train.transform is None and splits.test.transform is None  # augmentation is a view
    assert torch.equal(splits.test[3]["pixels"], splits.test[3]["pixels"])


@pytest.mark.parametrize("augment", [AugmentConfig(), AugmentConfig(crop="random_padded", padding=4), AugmentConfig.none()])
def test_augmentation_keeps_shape_and_dtype(folder, tmp_path, augment):
    splits = load_splits(config(folder, tmp_path))
    example = apply_train_augmentation(splits.train, augment)[0]
    assert example["pixels"].shape == (3, 32, 32) and example["pixels"].dtype == torch.uint8
    if not augment.enabled:
        assert torch.equal(example["pixels"], splits.train[0]["pixels"])


def test_workers_collate_in_parallel(folder, tmp_path):
    splits = load_splits(config(folder, tmp_path))
    loader = torch.utils.data.DataLoader(splits.test, batch_size=6, num_workers=2,
                                         collate_fn=ImageCollator(PreprocessConfig(height=32, width=32)))
    assert sum(len(batch["labels"]) for batch in loader) == 18


# ---- bad input ---------------------------------------------------------------------------------


def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(config(tmp_path / "nowhere", tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty directory"):
        load_splits(config(tmp_path / "empty", tmp_path))


def test_missing_split_and_empty_class(folder, tmp_path):
    with pytest.raises(DataError, match=r"no split \['val'\] \(found \['test', 'train'\]\)"):
        load_splits(config(folder, tmp_path, eval_split="val"))
    (folder / "train" / "purple").mkdir()
    (folder / "train" / "purple" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="purple: class folder has no images"):
        load_splits(config(folder, tmp_path))


def test_class_lists_must_match(folder, tmp_path):
    shutil.rmtree(folder / "test" / "green")
    with pytest.raises(DataError, match=r"classes differ between train \['blue', 'green', 'red'\] and test \['blue', 'red'\]"):
        load_splits(config(folder, tmp_path))


def test_stray_files_ignored_with_warning(folder, tmp_path, caplog):
    (folder / "train" / "red" / "notes.txt").write_text("x")
    (folder / "train" / "red" / ".DS_Store").write_bytes(b"\0")
    (folder / "train" / "README.md").write_text("x")
    with caplog.at_level(logging.WARNING):
        splits = load_splits(config(folder, tmp_path))
    assert "ignored 3 non-image file(s)" in caplog.text and len(splits.train) + len(splits.validation) == 36


def test_corrupt_images_fail_listing_all(folder, tmp_path):
    (folder / "train" / "red" / "0003.png").write_bytes(b"garbage")
    shutil.copy(folder / "train" / "red" / "0004.png", folder / "train" / "blue" / "x.jpg")  # PNG named .jpg: fine
    (folder / "test" / "blue" / "0001.png").write_bytes((folder / "test" / "blue" / "0000.png").read_bytes()[:60])
    with pytest.raises(DataError, match=r"(?s)2 unreadable image\(s\).*0003.png: not an image.*\n.*0001.png: corrupt or truncated"):
        load_splits(config(folder, tmp_path))


def test_corrupt_images_skipped_and_reported(folder, tmp_path):
    (folder / "train" / "red" / "0003.png").write_bytes(b"garbage")
    splits = load_splits(config(folder, tmp_path, on_bad_image="skip"))
    assert len(splits.skipped) == 1 and "0003.png" in splits.skipped[0]
    assert len(splits.train) + len(splits.validation) == 35


# ---- config --------------------------------------------------------------------------------------


def test_config_validation_names_fields():
    with pytest.raises(ValueError, match="validation_fraction"):
        DataConfig(validation_fraction=1.5)
    with pytest.raises(ValueError, match="on_bad_image"):
        DataConfig(on_bad_image="ignore")
    with pytest.raises(ValueError, match="augment.scale"):
        AugmentConfig(scale=(0.5, 0.1))


def test_config_builds_from_yaml_mapping():
    from vit_finetune.typed import build_dataclass

    built = build_dataclass(DataConfig, {"dataset": "x", "augment": {"crop": "random_padded", "scale": [0.2, 1]}}, "data")
    assert built.augment.crop == "random_padded" and built.augment.scale == (0.2, 1.0)


# ---- a slice of the real CIFAR-10 ---------------------------------------------------------------


@pytest.fixture
def cifar_slice(tmp_path):
    return copy_cifar10_slice(tmp_path / "cifar", {"train": 10, "test": 4})


@needs_cifar10
def test_real_cifar_slice(cifar_slice, tmp_path):
    splits = load_splits(config(cifar_slice, tmp_path, validation_fraction=0.1))
    assert splits.label_names[:3] == ["airplane", "automobile", "bird"] and len(splits.label_names) == 10
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (90, 10, 40)
    assert np.bincount(splits.validation.labels).tolist() == [1] * 10
    batch = ImageCollator(PreprocessConfig())([splits.test[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 224, 224)
    expected = preprocess_images([open_image(path) for path in splits.test.sources[:4]], PreprocessConfig())
    assert torch.equal(batch["pixel_values"], expected)
