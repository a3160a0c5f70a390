"""Streaming splits: WebDataset and Parquet shards, imagefolders, hub streams; order, resume, evaluation parity."""

import hashlib
import itertools
import warnings

import datasets
import numpy as np
import pytest
import torch

from data_helpers import make_dataset_dict, make_image_folder, make_shards
from vit_finetune.data import layouts
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.config import AugmentConfig, DataConfig
from vit_finetune.data.images import open_image
from vit_finetune.data.preprocess import PreprocessConfig
from vit_finetune.data.sources import apply_train_augmentation, len_or_none, load_splits
from vit_finetune.data.streaming import LazyImageDataset, StreamingImageDataset

CLASSES = ("red", "green", "blue")
CFG = PreprocessConfig(height=24, width=24)
NO_AUGMENT = AugmentConfig.none()


def stream_config(dataset, tmp_path, **kwargs) -> DataConfig:
    kwargs.setdefault("validation_fraction", 0.0)
    return DataConfig(dataset=str(dataset), cache_dir=str(tmp_path / "cache"), streaming=True, **kwargs)


def batches(dataset, count: int, batch_size: int = 4, workers: int = 0) -> list[dict]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=ImageCollator(CFG))
    return list(itertools.islice(loader, count))


def fingerprints(batch_list: list[dict]) -> list[str]:
    """One identity per example: a hash of its (unaugmented) pixels."""
    return [hashlib.sha1(image.numpy().tobytes()).hexdigest() for batch in batch_list for image in batch["pixel_values"]]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """train: 3 tar shards of 8 (mixed sizes), test: 1 of 8."""
    return make_shards(tmp_path_factory.mktemp("wds"), CLASSES, {"train": 3, "test": 1}, per_shard=8, size=(30, 40))


def test_webdataset_shards_stream_with_split_names_from_file_names(shards, tmp_path):
    splits = load_splits(stream_config(shards, tmp_path), seed=0, preprocess=CFG)
    assert isinstance(splits.train, StreamingImageDataset) and splits.validation is None
    assert splits.label_names == ["0", "1", "2"] and splits.task == "single_label"  # cls ints, no names given
    assert len_or_none(splits.train) is None and len(splits.test) == 8  # the stream is endless; test is indexed
    train = apply_train_augmentation(splits.train, NO_AUGMENT)
    epoch = fingerprints(batches(train, 6))  # 24 train examples = one data epoch
    assert len(set(epoch)) == 24
    test = batches(splits.test, 10)
    assert sum(len(batch["labels"]) for batch in test) == 8 and test[0]["pixel_values"].shape[1:] == (3, 24, 24)
    assert not (tmp_path / "cache" / "vit_finetune_decoded").exists() or not any((tmp_path / "cache" / "vit_finetune_decoded").iterdir())


def test_stream_shuffle_is_seeded_and_changes_every_epoch(shards, tmp_path):
    def two_epochs(seed):
        train = apply_train_augmentation(load_splits(stream_config(shards, tmp_path), seed, CFG).train, NO_AUGMENT)
        seen = fingerprints(batches(train, 12))
        return seen[:24], seen[24:]

    first, second = two_epochs(0)
    assert set(first) == set(second) and first != second  # each epoch is every example, reshuffled
    assert two_epochs(0) == (first, second) and two_epochs(1)[0] != first


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_at_the_same_stream_position(shards, tmp_path, workers):
    splits = load_splits(stream_config(shards, tmp_path, shuffle_buffer_size=5), seed=0, preprocess=CFG)
    train = apply_train_augmentation(splits.train, NO_AUGMENT)
    train.configure(rank=0, world=1, batch_size=4)
    uninterrupted = fingerprints(batches(train, 9, workers=workers))  # crosses a data epoch (6 batches)
    train.start_at(5)
    resumed = fingerprints(batches(train, 4, workers=workers))
    assert resumed == uninterrupted[5 * 4 :]


def test_eval_stream_decodes_as_the_cached_path_and_as_the_processor(shards, tmp_path):
    streamed = batches(load_splits(stream_config(shards, tmp_path), 0, CFG).test, 2)
    cached = load_splits(DataConfig(dataset=str(shards), cache_dir=str(tmp_path / "cache"), validation_fraction=0.0),
                         preprocess=CFG).test
    reference = ImageCollator(CFG)([cached[i] for i in range(4)])
    assert torch.equal(streamed[0]["pixel_values"], reference["pixel_values"])
    assert torch.equal(streamed[0]["labels"], reference["labels"])
    from transformers import ViTImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processor = ViTImageProcessor(size={"height": 24, "width": 24})
    images = [open_image(source) for source in _test_sources(shards)[:4]]
    expected = processor(images, return_tensors="pt")["pixel_values"]
    assert (streamed[0]["pixel_values"] - expected).abs().max() <= 0.02


def crop_processor():
    """A CLIP-style processor: shortest edge, then a centre crop (a second resize of its output would differ)."""
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(size={"shortest_edge": 24}, crop_size={"height": 20, "width": 20})
    return processor, PreprocessConfig.from_dict(processor.to_dict())


def assert_as_the_processor(split, sources: list, processor, cfg: PreprocessConfig) -> None:
    batch = next(iter(torch.utils.data.DataLoader(split, batch_size=4, collate_fn=ImageCollator(cfg))))
    expected = processor([open_image(source) for source in sources[:4]], return_tensors="pt")["pixel_values"]
    assert batch["pixel_values"].shape == expected.shape == (4, 3, 20, 20)
    assert (batch["pixel_values"] - expected).abs().max() <= 0.02


def test_eval_stream_follows_a_shortest_edge_and_centre_crop_processor(shards, tmp_path):
    processor, cfg = crop_processor()
    assert_as_the_processor(load_splits(stream_config(shards, tmp_path), 0, cfg).test, _test_sources(shards),
                            processor, cfg)


@pytest.mark.parametrize("streaming", [False, True])
def test_mixed_sizes_resized_at_decode_follow_a_centre_crop_processor(tmp_path, streaming):
    """Cached (resized at decode) and lazily decoded splits of mixed sizes are cropped once, as the processor does."""
    root = make_image_folder(tmp_path / "data", CLASSES, per_class=4, size=(30, 40))
    for path in sorted((root / "test").rglob("*.png"))[::2]:
        open_image(str(path)).resize((36, 28)).save(path)
    processor, cfg = crop_processor()
    config = DataConfig(dataset=str(root), cache_dir=str(tmp_path / "cache"), streaming=streaming, validation_fraction=0.0)
    test = load_splits(config, 0, cfg).test
    assert_as_the_processor(test, test.sources, processor, cfg)


def _test_sources(root) -> list[bytes]:
    import tarfile

    with tarfile.open(root / "test-00000.tar") as tar:
        return [tar.extractfile(member).read() for member in tar if member.name.endswith(".png")]


def test_max_eval_samples_bounds_the_eval_stream_deterministically(shards, tmp_path):
    splits = load_splits(stream_config(shards, tmp_path, max_eval_samples=5), 0, CFG)
    assert len(splits.test) == 5
    first, again = fingerprints(batches(splits.test, 9, workers=2)), fingerprints(batches(splits.test, 9))
    assert len(first) == 5 and sorted(first) == sorted(again)


def test_parquet_shards_stream_with_class_names_from_the_schema(tmp_path):
    root = make_shards(tmp_path / "pq", CLASSES, {"train": 2, "validation": 1, "test": 1}, per_shard=6, fmt="parquet")
    splits = load_splits(stream_config(root, tmp_path), 0, CFG)
    assert splits.label_names == list(CLASSES) and len(splits.validation) == 6 and len(splits.test) == 6
    labels = torch.cat([batch["labels"] for batch in batches(splits.test, 3)])
    assert labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_imagefolder_streams_lazily_with_the_cached_splits(tmp_path):
    root = make_image_folder(tmp_path / "data", CLASSES, per_class=8, size=(30, 40))
    kwargs = dict(validation_fraction=0.25, max_eval_samples=3)
    lazy = load_splits(stream_config(root, tmp_path, **kwargs), 0, CFG)
    cached = load_splits(DataConfig(dataset=str(root), cache_dir=str(tmp_path / "cache2"), **kwargs), 0, CFG)
    assert isinstance(lazy.train, LazyImageDataset)
    for name in ("train", "validation", "test"):
        assert getattr(lazy, name).sources == getattr(cached, name).sources and getattr(lazy, name).labels == getattr(cached, name).labels
    collate = ImageCollator(CFG)
    assert torch.equal(collate([lazy.test[1]])["pixel_values"], collate([cached.test[1]])["pixel_values"])
    assert not (tmp_path / "cache" / "vit_finetune_decoded").exists() or not any((tmp_path / "cache" / "vit_finetune_decoded").iterdir())
    crops = apply_train_augmentation(lazy.train, AugmentConfig(crop="random_resized"))[0]["pixels"]
    assert crops.shape == (3, 24, 24) and crops.dtype == torch.uint8


def test_hub_stream_goes_through_load_dataset_streaming(tmp_path, monkeypatch):
    asked = []

    def fake_hub(path, **kwargs):
        asked.append(kwargs)
        return datasets.IterableDatasetDict({name: split.to_iterable_dataset(num_shards=2)
                                             for name, split in make_dataset_dict(CLASSES, per_class=6).items()})

    monkeypatch.setattr(layouts, "load_dataset", fake_hub)
    splits = load_splits(DataConfig(dataset="owner/name", streaming=True, validation_fraction=0.0), 0, CFG)
    assert asked[0]["streaming"] is True and splits.label_names == list(CLASSES)
    assert sum(len(batch["labels"]) for batch in batches(splits.test, 5)) == 9
    assert len(fingerprints(batches(apply_train_augmentation(splits.train, NO_AUGMENT), 3))) == 12


def test_unreadable_stream_image_fails_or_is_skipped(tmp_path):
    from data_helpers import class_examples, write_tar_shard

    examples = class_examples(CLASSES, 6, 16, np.random.default_rng(0))
    examples[2] = (examples[2][0], examples[2][1], b"not a png")
    write_tar_shard(tmp_path / "bad" / "train-00000.tar", examples)
    write_tar_shard(tmp_path / "bad" / "test-00000.tar", class_examples(CLASSES, 3, 16, np.random.default_rng(1)))
    from vit_finetune.data.errors import DataError

    splits = load_splits(stream_config(tmp_path / "bad", tmp_path), 0, CFG)
    with pytest.raises(DataError, match="000002.png: not an image"):
        batches(apply_train_augmentation(splits.train, NO_AUGMENT), 1)
    skipping = load_splits(stream_config(tmp_path / "bad", tmp_path, on_bad_image="skip"), 0, CFG)
    assert len(fingerprints(batches(apply_train_augmentation(skipping.train, NO_AUGMENT), 5, batch_size=5))) == 25


def test_streaming_with_workers_is_deterministic(shards, tmp_path):
    def run():
        torch.manual_seed(0)
        train = apply_train_augmentation(load_splits(stream_config(shards, tmp_path), 0, CFG).train,
                                         AugmentConfig(crop="random_resized"))
        return [batch["pixel_values"] for batch in batches(train, 4, workers=2)]

    assert all(torch.equal(a, b) for a, b in zip(run(), run()))


def test_max_train_samples_limits_each_stream_epoch(shards, tmp_path):
    train = load_splits(stream_config(shards, tmp_path, max_train_samples=10), 0, CFG).train
    assert train.estimated_size == 10
    seen = fingerprints(batches(apply_train_augmentation(train, NO_AUGMENT), 5))
    assert len(set(seen[:10])) == 10 and set(seen[10:]) == set(seen[:10])  # the same 10 examples every epoch
