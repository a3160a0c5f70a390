"""Where each split of a run comes from, for every layout the pipeline reads, cached or streaming.

    raw = load_raw(config, streaming=False)        # the data set's splits, undecoded
    roles = assign_roles(raw, config)              # train / validation / test, or None = carve from train

Layouts (`DataConfig` explains the keys):
- `data.train_dir` (+ `validation_dir`, `test_dir`): one folder per split: class folders, a
  metadata file, or shards (a folder or pattern of them);
- a hub id (`load_dataset(id, dataset_config_name, revision=..., streaming=...)`);
- a local `save_to_disk` DatasetDict;
- shards: a folder holding `*.tar` / `*.parquet` files (at most one folder down), or a pattern of
  them; the splits are named from the file names as `datasets` names them (`shards.split_by_name`);
- an imagefolder root `<split>/<class>/<image>` or `<split>/metadata.{jsonl,csv}` (`folders.py`).

Roles: train is `data.train_split`; test is `data.eval_split`; validation is `data.validation_split`,
else the data set's own `validation` split when it has one (and it is not the eval split). A data
set with only a train split gets test carved out of train (`data.test_fraction`) with a warning; a
missing eval split is an error otherwise. Validation is carved from train (`validation_fraction`)
when no split provides it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import load_dataset, load_from_disk

from .config import DataConfig, looks_local
from .errors import DataError
from .folders import scan_image_folder, scan_split, split_folders
from .labels import LabelColumn, find_label_column
from .shard_index import ShardIndex, index_shards, tar_label_column
from .shards import has_shards, is_pattern, load_shards, shard_files, split_by_name

logger = logging.getLogger(__name__)
AUTO_VALIDATION = "validation"


@dataclass
class RawSplit:
    """One split, undecoded: `rows` (a `datasets.Dataset`, or an `IterableDataset` when streaming
    sequential sources), `name` for messages, and the shard index of local shards."""

    rows: datasets.Dataset | datasets.IterableDataset
    name: str
    index: ShardIndex | None = None
    label: LabelColumn | None = None  # the label column the shard index was read with


@dataclass
class RawData:
    """The splits a run may use (by the data set's own names) and the names of all its splits."""

    splits: dict[str, RawSplit]
    available: list[str]


@dataclass
class Roles:
    """The splits a run uses; None: carved out of train (seeded) instead."""

    train: RawSplit
    validation: RawSplit | None
    test: RawSplit | None
    origin: str


def load_raw(config: DataConfig, streaming: bool) -> RawData:
    """The data set's splits (by its own names) that a run may use, undecoded."""
    wanted = [config.train_split, config.eval_split, config.validation_split or AUTO_VALIDATION]
    if config.train_dir is not None:
        return _from_dirs(config, streaming)
    if not looks_local(config.dataset):
        return _from_hub(config, wanted, streaming)
    path = Path(config.dataset).expanduser()
    if is_pattern(config.dataset) or has_shards(path):
        return _from_shards(shard_files(config.dataset), config, streaming, wanted)
    if not path.is_dir():
        raise DataError(f"{path}: data set directory does not exist" if not path.exists() else f"{path}: not a directory")
    if (path / "dataset_dict.json").is_file():
        return _wrap(_load_saved(path), str(path), wanted)
    if (path / "state.json").is_file():
        raise DataError(f"{path}: a single saved Dataset; save a DatasetDict with splits {wanted[:2]}")
    return RawData(_wrap(scan_image_folder(path, tuple(wanted)), str(path), wanted).splits, split_folders(path))


def assign_roles(data: RawData, config: DataConfig) -> Roles:
    """Train / validation / test of `data`; a split that must be carved from train is None."""
    origin, raw = config.train_dir or config.dataset, data.splits
    if config.train_split not in raw:
        raise DataError(f"{origin}: no split {[config.train_split]} (found {data.available})")
    test = raw.get(config.eval_split)
    if test is None and data.available != [config.train_split]:
        raise DataError(f"{origin}: no split {[config.eval_split]} (found {data.available})")
    if test is None:
        logger.warning("%s has only a %r split: carving %.0f%% of it out as the test split (data.test_fraction, "
                       "stratified, seeded)", origin, config.train_split, 100 * config.test_fraction)
    return Roles(train=raw[config.train_split], validation=_validation(data, config, origin), test=test, origin=origin)


def _validation(data: RawData, config: DataConfig, origin: str) -> RawSplit | None:
    raw = data.splits
    if config.validation_split is not None:
        if config.validation_split not in raw:
            raise DataError(f"{origin}: no split {[config.validation_split]} for data.validation_split "
                            f"(found {data.available})")
        return raw[config.validation_split]
    if AUTO_VALIDATION in raw and config.eval_split != AUTO_VALIDATION:
        logger.info("%s: using its own %r split for model selection", origin, AUTO_VALIDATION)
        return raw[AUTO_VALIDATION]
    return None


# ---- sources ---------------------------------------------------------------------------------


def _wrap(splits: datasets.DatasetDict | datasets.IterableDatasetDict, origin: str, wanted: list[str]) -> RawData:
    return RawData({name: RawSplit(rows=rows, name=f"{origin} [{name}]") for name, rows in splits.items() if name in wanted},
                   sorted(splits))


def _from_hub(config: DataConfig, wanted: list[str], streaming: bool) -> RawData:
    try:
        raw = load_dataset(config.dataset, name=config.dataset_config_name, revision=config.revision,
                           cache_dir=config.cache_dir, streaming=streaming)
    except Exception as err:
        raise DataError(f"{config.dataset}: not a local directory, and loading it as a hub data set failed: {err}") from err
    return _wrap(raw, config.dataset, wanted)


def _load_saved(path: Path) -> datasets.DatasetDict:
    """A `save_to_disk` folder; `datasets` cannot reload a saved empty split (IndexError), so name it."""
    try:
        return load_from_disk(str(path))
    except IndexError as err:
        raise DataError(f"{path}: cannot read this save_to_disk folder (an empty split?): {err}") from err


def _from_dirs(config: DataConfig, streaming: bool) -> RawData:
    """`data.train_dir` / `validation_dir` / `test_dir`, as the splits train / validation / test."""
    folders = {config.train_split: ("train_dir", config.train_dir), config.eval_split: ("test_dir", config.test_dir),
               config.validation_split or AUTO_VALIDATION: ("validation_dir", config.validation_dir)}
    raw = {}
    for split, (key, folder) in folders.items():
        if folder is not None:
            raw[split] = _from_dir(folder, key, split, config, streaming)
    return RawData(raw, sorted(raw))


def _from_dir(folder: str, key: str, split: str, config: DataConfig, streaming: bool) -> RawSplit:
    path = Path(folder).expanduser()
    if not is_pattern(folder) and not path.is_dir():
        raise DataError(f"data.{key}: {path} does not exist" if not path.exists() else f"data.{key}: {path} is not a folder")
    if is_pattern(folder) or has_shards(path, depth=1):
        files = [str(file) for file in shard_files(folder)]
        return _from_shards_split(files, f"{folder} [{split}]", config, streaming)
    return RawSplit(rows=scan_split(path), name=f"{path} [{split}]")


def _from_shards(files: list[Path], config: DataConfig, streaming: bool, wanted: list[str]) -> RawData:
    splits = split_by_name(files)
    return RawData({split: _from_shards_split(split_files, f"{config.dataset} [{split}]", config, streaming)
                    for split, split_files in splits.items() if split in wanted}, sorted(splits))


def _from_shards_split(files: list[str], name: str, config: DataConfig, streaming: bool) -> RawSplit:
    """One split's shards: checked and indexed (`shard_index.py`), then loaded by `datasets`."""
    label = shard_label_column(files, config.label_column, name)
    index = index_shards(files, label)
    rows = load_shards(files, streaming=streaming, cache_dir=config.cache_dir)
    return RawSplit(rows=rows, name=name, index=index, label=label)


def shard_label_column(files: list[str], configured: str | None, name: str) -> LabelColumn:
    """The label column of a split's shards: the configured one, a tar's label member, or from a parquet schema."""
    if files[0].endswith(".tar"):
        return LabelColumn.parse(configured) if configured else tar_label_column(files[0])
    import pyarrow.parquet as pq

    return find_label_column(datasets.Features.from_arrow_schema(pq.read_schema(files[0])), configured, name)
