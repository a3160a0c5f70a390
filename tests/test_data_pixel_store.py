"""PixelStore: batch reads straight from the decoded Arrow file equal datasets' own row access."""

import pickle

import datasets
import numpy as np
import pytest

from data_helpers import make_image_folder
from vit_finetune.data import compat, sources
from vit_finetune.data.config import DataConfig
from vit_finetune.data.pixel_store import PixelStore


def datasets_rows(split, indices) -> np.ndarray:
    return split.rows.with_format("numpy", columns=["pixels"], dtype=np.uint8)[list(indices)]["pixels"]


@pytest.fixture
def splits(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DECODE_BATCH", 5)  # many small record batches in the Arrow file
    folder = make_image_folder(tmp_path / "data", per_class=12)
    (folder / "train" / "red" / "0003.png").write_bytes(b"garbage")  # skip mode: one more select()
    config = DataConfig(dataset=str(folder), cache_dir=str(tmp_path / "cache"), validation_fraction=0.25,
                        on_bad_image="skip", max_train_samples=20)
    return sources.load_splits(config)


def test_reads_equal_datasets_rows_across_record_batches_and_selections(splits):
    rng = np.random.default_rng(0)
    for split in (splits.train, splits.validation, splits.test):
        indices = rng.permutation(len(split)).tolist()
        assert np.array_equal(split._pixels.take(indices), datasets_rows(split, indices))
        blocks, _, _ = split._pixels._views  # the in-place path ran, not the fallback
        assert len(blocks) > 1
    train_rows = compat.dataset_row_mapping(splits.train.rows)
    assert not np.array_equal(train_rows, np.arange(len(train_rows)))  # the train split really is a selection


def test_views_are_rebuilt_after_pickling(splits):
    store = pickle.loads(pickle.dumps(splits.train._pixels))
    assert store._views is None
    assert np.array_equal(store.take([3, 0, 7]), datasets_rows(splits.train, [3, 0, 7]))


def test_other_layouts_fall_back_to_datasets_once(monkeypatch):
    pixels = np.arange(4 * 3 * 2 * 2, dtype=np.uint8).reshape(4, 3, 2, 2)
    rows = datasets.Dataset.from_dict({"pixels": pixels.tolist()})  # nested lists, no fixed shape
    store = PixelStore(rows)
    attempts = []
    make_views = store._make_views
    monkeypatch.setattr(store, "_make_views", lambda: attempts.append(1) or make_views())
    assert np.array_equal(store.take([2, 0]), pixels[[2, 0]])
    assert np.array_equal(store.take([1]), pixels[[1]])
    assert store._views == () and len(attempts) == 1  # the layout is judged once, not on every batch
