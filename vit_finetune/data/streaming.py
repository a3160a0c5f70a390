"""Streaming (`data.streaming: true`): images read and decoded on the fly, nothing cached on disk.

    splits = load_splits(DataConfig(dataset="shards/", streaming=True), seed=0, preprocess=cfg)
    train = apply_train_augmentation(splits.train, augment)      # random-resized crops decoded with draft mode

Two kinds of split, by how the source is read:

- `LazyImageDataset` (map-style) for sources with random access to every image: imagefolders
  (class folders or a metadata file) and `save_to_disk` folders. Only the paths (or Arrow rows) and
  labels are held; each batch is decoded in `__getitems__`, in a DataLoader worker. Shuffling, the
  split between processes (accelerate's sampler), carving and resuming are the cached path's,
  exactly (`sources.split_roles`).
- `StreamingImageDataset` (iterable) for sequential sources: WebDataset / Parquet shards and hub
  streams (`datasets.IterableDataset`, read by `datasets`' own builders). Every process (rank) and
  every DataLoader worker is one "lane" of `ranks x workers`; `datasets.distributed.split_dataset_by_node`
  gives each lane its own shards (every lanes-th example when the shard count is not a multiple of
  the lane count), so no example is read twice in a data epoch. Training reads an endless stream:
  a seeded shuffle of the shard order and a buffer of `data.shuffle_buffer_size` encoded examples
  per lane, reshuffled each data epoch (`set_epoch`), and the Trainer counts `max_steps` (every rank
  takes the same number of steps, so ranks never wait on one another at an epoch end). Evaluation
  streams are read in order, the first `data.max_eval_samples` examples, every worker decoding its
  share of them: deterministic.

A split the data set lacks is carved out of train: by a seeded hash of each example's key (its
WebDataset key, else its image path, else a hash of its bytes), in the proportions asked; a stream
cannot be stratified without being read first.

Training examples are decoded straight to the model's input size: with `crop: random_resized` the
crop box is drawn on the original image and decoded with JPEG draft mode (`draft.py`); otherwise the
image is decoded and resized as the cached path resizes mixed sizes. Evaluation decodes exactly as the
cached path does (`preprocess.pil_to_pixels` with the checkpoint's processor).

Resuming a streaming run: `StreamingImageDataset.start_at(batches)` fast-forwards each lane past the
examples its rank consumed, reading but not decoding them, and gives each worker the role it had
(the DataLoader's round-robin order), so the resumed run sees the same examples in the same batches
(augmentation draws differ, as after any resume). This needs the same number of processes and
workers; the skip costs a read of what was consumed (the README has the rate).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import datasets
import torch
from datasets.distributed import split_dataset_by_node

from .augment import augment_batch
from .collate import AT_MODEL_SIZE
from .config import AugmentConfig, DataConfig
from .draft import decode_random_crop
from .errors import DataError
from .images import ImageFileError, open_image
from .labels import multi_hot
from .layouts import RawSplit, Roles, assign_roles, load_raw
from .preprocess import PreprocessConfig, pil_to_pixels
from .sources import (Columns, ImageSplits, dataset_columns, decoded_size, example_label, image_source, label_array,
                      prepare_roles, split_roles)

logger = logging.getLogger(__name__)
DECODE_CHUNK = 32  # examples decoded, then augmented as one batch, at a time
READ_BATCH = 64  # examples read from `datasets` at a time
MAX_ITERABLE_SHARDS = 64  # shards of a random-access split turned into a stream


# ---- decoding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoder:
    """Encoded image -> uint8 (3, h, w) at the model's input size `size`.

    `crop` (scale, ratio): a random-resized crop decoded from the original image (training); None:
    the whole image resized as the cached path resizes it (`pil_to_pixels(image, preprocess)`).
    """

    preprocess: PreprocessConfig
    size: tuple[int, int]
    on_bad_image: str = "fail"
    crop: tuple[tuple[float, float], tuple[float, float]] | None = None

    def __call__(self, name: str, data: str | bytes) -> torch.Tensor | None:
        """The pixels, or None for an unreadable image in skip mode (logged)."""
        try:
            if self.crop is not None:
                return decode_random_crop(data, name, self.size, *self.crop)
            return pil_to_pixels(open_image(data, name=name), self.preprocess)
        except ImageFileError as err:
            if self.on_bad_image == "skip":
                logger.warning("skipping unreadable image %s", err)
                return None
            raise DataError(f"{err} (set data.on_bad_image: skip to drop unreadable images)") from None

    def for_training(self, cfg: AugmentConfig) -> tuple["Decoder", AugmentConfig]:
        """This decoder with the random-resized crop of `cfg` done at decode, and the rest of `cfg`."""
        if cfg.crop != "random_resized":
            return self, cfg
        return dataclasses.replace(self, crop=(cfg.scale, cfg.ratio)), dataclasses.replace(cfg, crop="none")


def make_decoder(preprocess: PreprocessConfig | None, config: DataConfig) -> Decoder:
    if preprocess is None:
        raise ValueError("streaming decodes at the model's input size: pass load_splits(..., preprocess=cfg)")
    return Decoder(preprocess=preprocess, size=decoded_size(preprocess, "streaming"), on_bad_image=config.on_bad_image)


def _augmenter(cfg: AugmentConfig):
    return functools.partial(augment_batch, cfg=cfg) if cfg.enabled else None


def _decode_chunk(items: list[tuple[str, Any, Any]], decoder: Decoder, transform) -> list[dict]:
    """(name, data, label) items -> examples {"pixels", "labels"}, unreadable images dropped in skip mode."""
    decoded = [(decoder(name, data), label) for name, data, label in items]
    decoded = [(pixels, label) for pixels, label in decoded if pixels is not None]
    if not decoded:
        return []
    pixels = torch.stack([pixels for pixels, _ in decoded])  # (B, 3, h, w) uint8
    if transform is not None:
        pixels = transform(pixels)
    return [{"pixels": image, "labels": label, AT_MODEL_SIZE: True} for image, (_, label) in zip(pixels.unbind(0), decoded)]


# ---- random access: LazyImageDataset -----------------------------------------------------------


class LazyImageDataset(torch.utils.data.Dataset):
    """Prepared rows (image: undecoded, label) of a random-access source, decoded per batch.

    Item i -> {"pixels": uint8 (3, h, w) at the model's size, "labels": int or float (K,)}. An
    unreadable image in skip mode is left out of its batch.
    """

    def __init__(self, rows: datasets.Dataset, decoder: Decoder, num_labels: int, transform=None):
        self.rows, self.decoder, self.num_labels, self.transform = rows, decoder, num_labels, transform
        self._labels = label_array(rows, num_labels)
        self._images = rows.select_columns(["image"])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        images = self._images[list(indices)]["image"]
        items = [(*image_source(image, "row", index), example_label(self._labels, index))
                 for image, index in zip(images, indices)]
        return _decode_chunk(items, self.decoder, self.transform)

    @property
    def labels(self) -> list:
        return self._labels.tolist()

    @property
    def sources(self) -> list[str]:
        return [image_source(image, "row", index)[0] for index, image in enumerate(self._images["image"])]

    def with_augmentation(self, cfg: AugmentConfig) -> "LazyImageDataset":
        decoder, rest = self.decoder.for_training(cfg)
        return LazyImageDataset(self.rows, decoder, self.num_labels, _augmenter(rest))


# ---- sequential: StreamingImageDataset -------------------------------------------------------


@dataclass(frozen=True)
class Carve:
    """Which role a stream example belongs to when splits are carved out of train: a seeded hash of its
    key, uniform in [0, 1), below `test` -> test, below `test + validation` -> validation, else train."""

    seed: int
    test: float = 0.0
    validation: float = 0.0

    def role(self, example: dict, image: dict | None) -> str:
        position = self._position(_example_key(example, image))
        if position < self.test:
            return "test"
        return "validation" if position < self.test + self.validation else "train"

    def _position(self, key: bytes) -> float:
        digest = hashlib.blake2b(key, digest_size=8, key=str(self.seed).encode()).digest()
        return int.from_bytes(digest, "big") / 2**64


def _example_key(example: dict, image: dict | None) -> bytes:
    """A stable identity of a stream example: WebDataset url + key, else the image path, else its bytes' hash."""
    if example.get("__key__") is not None:
        return f"{Path(str(example.get('__url__'))).name}/{example['__key__']}".encode()
    if image and image.get("path"):
        return str(image["path"]).encode()
    return hashlib.sha1(image["bytes"] if image else b"").digest()


class StreamingImageDataset(torch.utils.data.IterableDataset):
    """A split of a sequential source, decoded in the DataLoader workers (see the module doc).

    `role`: which carved role to keep ("train", "validation", "test"), or None for all examples.
    `training`: endless, shuffled, split between ranks and workers; else one ordered pass over the
    first `limit` examples. `length`: the exact number of examples when known (evaluation only).
    """

    def __init__(self, stream: datasets.IterableDataset, columns: Columns, decoder: Decoder, num_labels: int, *,
                 name: str, training: bool, role: str | None = None, carve: Carve | None = None, seed: int = 0,
                 shuffle_buffer_size: int = 1000, limit: int | None = None, length: int | None = None,
                 estimated_size: int | None = None, transform=None):
        self.stream, self.columns, self.decoder, self.num_labels = _undecoded(stream, columns), columns, decoder, num_labels
        self.name, self.training, self.role, self.carve, self.seed = name, training, role, carve, seed
        self.shuffle_buffer_size, self.limit, self.length = shuffle_buffer_size, limit, length
        self.estimated_size = estimated_size  # examples per data epoch, roughly (training: for max_steps)
        self.transform = transform
        self.rank, self.world, self.batch_size, self.start_batches = 0, 1, 1, 0

    def __len__(self) -> int:
        if self.training or self.length is None:
            raise TypeError(f"{self.name}: a stream of unknown length")
        return self.length

    def configure(self, rank: int, world: int, batch_size: int) -> None:
        """This process's place among `world` ranks and its per-device batch size (training)."""
        self.rank, self.world, self.batch_size = rank, world, batch_size

    def start_at(self, batches: int) -> None:
        """Resume after this rank has consumed `batches` batches (of `batch_size`) since the start."""
        self.start_batches = batches

    def with_augmentation(self, cfg: AugmentConfig) -> "StreamingImageDataset":
        augmented = copy.copy(self)
        augmented.decoder, rest = self.decoder.for_training(cfg)
        augmented.transform = _augmenter(rest)
        return augmented

    # ---- iteration (in each DataLoader worker) ---------------------------------------------

    def __iter__(self) -> Iterator[dict]:
        items = self._training_items() if self.training else self._evaluation_items()
        while chunk := list(itertools.islice(items, DECODE_CHUNK)):
            yield from _decode_chunk(chunk, self.decoder, self.transform)

    def _training_items(self) -> Iterator[tuple[str, Any, Any]]:
        worker, workers = _worker()
        role = (worker + self.start_batches) % workers  # the worker that would serve the next batch
        lane, lanes = self.rank * workers + role, self.world * workers
        consumed = max(0, -(-(self.start_batches - role) // workers)) * self.batch_size  # this role's examples so far
        stream = self.stream.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer_size)
        stream = split_dataset_by_node(stream, rank=lane, world_size=lanes)
        return itertools.islice(self._endless(stream, lane, lanes), consumed, None)

    def _endless(self, stream: datasets.IterableDataset, lane: int, lanes: int) -> Iterator[tuple[str, Any, Any]]:
        for epoch in itertools.count():
            stream.set_epoch(epoch)
            count = 0
            for item in self._items(stream):
                count += 1
                yield item
            if count == 0:
                raise DataError(f"{self.name}: reader {lane} of {lanes} (processes x workers) got no examples "
                                f"({self.stream.n_shards} shards); use fewer dataloader workers or more shards")

    def _evaluation_items(self) -> Iterator[tuple[str, Any, Any]]:
        worker, workers = _worker()
        items = itertools.islice(self._items(self.stream), self.limit)
        return (item for index, item in enumerate(items) if index % workers == worker)

    def _items(self, stream: datasets.IterableDataset) -> Iterator[tuple[str, Any, Any]]:
        """(name, encoded image, label) of the examples of this split's role, in stream order, undecoded."""
        index = 0
        for batch in stream.iter(batch_size=READ_BATCH):  # .iter: no second split by DataLoader worker
            for example in (dict(zip(batch, values)) for values in zip(*batch.values())):
                index += 1
                image = self.columns.image(example)
                if self.carve is not None and self.carve.role(example, image) != self.role:
                    continue
                yield self._item(example, image, index - 1)

    def _item(self, example: dict, image: dict | None, index: int) -> tuple[str, Any, Any]:
        where = f"{example.get('__url__') or self.name}: example {example.get('__key__') or index}"
        if image is None:
            raise DataError(f"{where}: no image")
        name, data = image_source(image, where, index)
        ids = self.columns.encoder.encode(self.columns.label.read(example), where)
        label = ids if isinstance(ids, int) else torch.from_numpy(multi_hot(ids, self.num_labels))
        return name, data, label


def _undecoded(stream: datasets.IterableDataset, columns: Columns) -> datasets.IterableDataset:
    """The stream with its image columns as encoded bytes / paths (decoding happens here, not in `datasets`)."""
    for name in columns.images:
        if stream.features is not None and isinstance(stream.features.get(name), datasets.Image):
            stream = stream.cast_column(name, datasets.Image(decode=False))
    return stream


def _worker() -> tuple[int, int]:
    """(this DataLoader worker's id, number of workers); (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def training_steps(train: StreamingImageDataset, epochs: float, processes: int, batch_size: int) -> int:
    """Optimizer steps for `epochs` passes over a stream of `train.estimated_size` examples."""
    if train.estimated_size is None:
        raise DataError(f"{train.name}: the stream's length is unknown; set training.max_steps")
    return max(1, math.ceil(epochs * train.estimated_size / (processes * batch_size)))


# ---- load_streaming_splits ---------------------------------------------------------------------


def load_streaming_splits(config: DataConfig, seed: int, preprocess: PreprocessConfig | None) -> ImageSplits:
    """`load_splits` for `data.streaming`: nothing decoded ahead, nothing cached."""
    decoder = make_decoder(preprocess, config)
    roles = assign_roles(load_raw(config, streaming=True), config)
    present = [split for split in (roles.train, roles.validation, roles.test) if split is not None]
    if all(isinstance(split.rows, datasets.Dataset) for split in present):
        return _random_access_splits(roles, config, seed, decoder)
    return _sequential_splits(_as_streams(roles), config, seed, decoder)


def _random_access_splits(roles: Roles, config: DataConfig, seed: int, decoder: Decoder) -> ImageSplits:
    prepared, names = prepare_roles(roles, config)
    train, validation, test = split_roles(prepared, config, seed)
    make = functools.partial(LazyImageDataset, decoder=decoder, num_labels=len(names))
    return ImageSplits(train=make(train), validation=None if validation is None else make(validation),
                       test=make(test), label_names=names, task=config.task)


def _as_streams(roles: Roles) -> Roles:
    """Random-access splits mixed with streams: read them as streams too."""
    def stream(split: RawSplit | None) -> RawSplit | None:
        if split is None or not isinstance(split.rows, datasets.Dataset):
            return split
        shards = max(1, min(MAX_ITERABLE_SHARDS, len(split.rows)))
        return dataclasses.replace(split, rows=split.rows.to_iterable_dataset(num_shards=shards))

    return Roles(train=stream(roles.train), validation=stream(roles.validation), test=stream(roles.test), origin=roles.origin)


def _sequential_splits(roles: Roles, config: DataConfig, seed: int, decoder: Decoder) -> ImageSplits:
    columns = dataset_columns(roles, config)
    carve = Carve(seed, test=config.test_fraction if roles.test is None else 0.0,
                  validation=config.validation_fraction if roles.validation is None else 0.0)
    common = dict(columns=columns, decoder=decoder, num_labels=len(columns.encoder.names), seed=seed)
    train = _train_stream(roles.train, carve, config, common)
    validation = None
    if roles.validation is not None or carve.validation > 0:
        validation = _eval_stream(roles.validation or roles.train, carve, "validation", config, common)
    test = _eval_stream(roles.test or roles.train, carve, "test", config, common)
    return ImageSplits(train=train, validation=validation, test=test, label_names=columns.encoder.names, task=config.task)


def _train_stream(split: RawSplit, carve: Carve, config: DataConfig, common: dict) -> StreamingImageDataset:
    rows, carved = split.rows, carve.test + carve.validation
    if config.max_train_samples is not None:
        rows = rows.take(config.max_train_samples)
    size = _known_size(split)
    estimated = None if size is None else round(size * (1 - carved))
    if config.max_train_samples is not None:
        estimated = min(config.max_train_samples, estimated or config.max_train_samples)
    return StreamingImageDataset(rows, **common, name=split.name, training=True, role="train" if carved else None,
                                 carve=carve if carved else None, shuffle_buffer_size=config.shuffle_buffer_size,
                                 estimated_size=estimated)


def _eval_stream(split: RawSplit, carve: Carve, role: str, config: DataConfig, common: dict) -> StreamingImageDataset:
    carved = getattr(carve, role) > 0
    size = None if carved else _known_size(split)
    length = None if size is None else min(size, config.max_eval_samples or size)
    if carved:
        logger.warning("%s: the %s split is carved out of the train stream, so each evaluation reads the train "
                       "stream until it has %s examples; a data set's own %s split is cheaper", split.name, role,
                       config.max_eval_samples or "all its", role)
    return StreamingImageDataset(split.rows, **common, name=f"{split.name} ({role})" if carved else split.name,
                                 training=False, role=role if carved else None, carve=carve if carved else None,
                                 limit=config.max_eval_samples, length=length)


def _known_size(split: RawSplit) -> int | None:
    """Examples in a split: from the shard index, or the data set's own split info."""
    if split.index is not None:
        return split.index.total
    info = getattr(split.rows, "info", None)
    split_info = (info.splits or {}).get(str(getattr(split.rows, "split", None))) if info is not None else None
    return getattr(split_info, "num_examples", None) or None
