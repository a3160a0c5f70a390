"""The adapters of the private torch / datasets APIs: still there, and identical results without them."""

import logging

import datasets
import numpy as np
import pytest
import torch

from vit_finetune.data import compat
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.pixel_store import PixelStore
from vit_finetune.data.preprocess import PreprocessConfig

STORAGE_COUNTER = ("torch._C._storage_Use_Count", "torch", "batch buffers are never reused")
ROW_MAPPING = ("datasets.Dataset._indices", "datasets", "the pixel store reads rows through datasets")


@pytest.fixture(autouse=True)
def fresh_warnings():
    compat._warn_once.cache_clear()  # each test sees the once-only warning
    yield
    compat._warn_once.cache_clear()


def decoded_rows(count: int = 12) -> datasets.Dataset:
    """A fixed-shape uint8 pixels column, as `sources.decode_split` writes it."""
    pixels = np.arange(count * 3 * 2 * 2, dtype=np.uint8).reshape(count, 3, 2, 2)
    features = datasets.Features({"pixels": datasets.Array3D(shape=(3, 2, 2), dtype="uint8")})
    return datasets.Dataset.from_dict({"pixels": pixels}, features=features)


# ---- torch._C._storage_Use_Count ---------------------------------------------------------------


def test_torch_still_has_the_storage_use_count():
    batch = torch.empty(2, 3)
    assert compat.storage_users(batch) is not None, compat.missing_api_message(*STORAGE_COUNTER)
    view = batch[1:]
    assert compat.storage_users(batch) == 2 and compat.storage_users(view) == 2
    del view
    assert compat.storage_users(batch) == 1


def test_without_the_storage_count_the_pool_never_reuses_and_batches_are_identical(monkeypatch, caplog):
    examples = [{"pixels": torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8), "labels": i} for i in range(4)]
    cfg = PreprocessConfig(height=16, width=16)
    pooled = ImageCollator(cfg)
    expected = [pooled(examples)["pixel_values"].clone() for _ in range(3)]
    monkeypatch.setattr(compat, "_STORAGE_USE_COUNT", None)
    unpooled = ImageCollator(cfg)
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        batches = [unpooled(examples)["pixel_values"] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(expected, batches))
    assert unpooled.pool.buffers == []  # no buffer kept, so none can be handed out while in use
    assert [r.getMessage() for r in caplog.records] == [compat.missing_api_message(*STORAGE_COUNTER)]


# ---- datasets.Dataset._indices -----------------------------------------------------------------


def test_datasets_still_has_the_row_mapping():
    rows = decoded_rows()
    selected = rows.select([7, 2, 5]).shuffle(seed=0)
    mapping = compat.dataset_row_mapping(selected)
    assert mapping is not None, compat.missing_api_message(*ROW_MAPPING)
    picked = selected.with_format("numpy")["pixels"]  # (3, 3, 2, 2)
    assert np.array_equal(rows.with_format("numpy")["pixels"][mapping], picked)
    assert np.array_equal(compat.dataset_row_mapping(rows), np.arange(len(rows)))


def test_without_the_row_mapping_the_pixel_store_reads_through_datasets(monkeypatch, caplog):
    selected = decoded_rows().select([9, 0, 4, 4, 11])
    indices = [4, 0, 2, 1]
    fast = PixelStore(selected).take(indices)
    monkeypatch.setattr(compat, "_INDICES", "_indices_of_a_future_release")
    store = PixelStore(selected)
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        fallback = store.take(indices)
    assert store._views == ()  # datasets' row access, not the in-place views
    assert fallback.dtype == np.uint8 and np.array_equal(fallback, fast)
    assert np.array_equal(fast, selected.with_format("numpy")["pixels"][indices])
    assert [r.getMessage() for r in caplog.records] == [compat.missing_api_message(*ROW_MAPPING)]
