"""Load a data set into train / validation / test: decoded once into a cache (default) or, with
`data.streaming`, decoded on the fly (`streaming.py`).

    splits = load_splits(DataConfig(dataset="../shared/data/cifar10"), seed=42)
    train = apply_train_augmentation(splits.train, config.augment)   # eval splits stay unaugmented
    batch = ImageCollator(preprocess_cfg)([train[0], train[1]])

Sources and split roles: `layouts.py` (hub id, imagefolder with class folders or a metadata file,
save_to_disk, WebDataset / Parquet shards, one folder per split). Labels: `labels.py` (single- or
multi-label, class names from a ClassLabel feature or the train split's values).

Decoding: every image goes through `images.open_image` once and is stored as uint8 (3, H, W) in an
Arrow file under the cache folder, named by the source's fingerprint (for an imagefolder: a hash of
all paths, sizes and mtimes), so later runs memory-map it instead of decoding. A split whose images
all share one size is stored at that native size (CIFAR: 32x32, resized per batch by the collator);
a split of mixed sizes needs `preprocess=` and is resized at decode exactly as `resize_batch` would.

Subsets: a split the data set lacks is carved out of train, stratified (per-class proportional) and
seeded: test (`test_fraction`, only for a data set with just a train split), then validation
(`validation_fraction`); `max_train_samples` / `max_eval_samples` take stratified, seeded samples
of train and of validation / test. Indices stay in file order (sorted) within each subset.
Multi-label rows are sampled uniformly (seeded) instead of per class.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datasets
import numpy as np
import torch
from PIL import Image

from .augment import augment_batch
from .collate import AT_MODEL_SIZE
from .config import AugmentConfig, DataConfig
from .errors import DataError
from .images import ImageFileError, open_image, open_regular_file
from .labels import LabelColumn, LabelEncoder, distinct_names, feature_names, find_label_column, multi_hot
from .layouts import RawSplit, Roles, assign_roles, load_raw
from .pixel_store import PixelStore
from .preprocess import PreprocessConfig, pil_to_pixels
from .shard_index import IMAGE_MEMBERS

logger = logging.getLogger(__name__)
DECODE_BATCH = 500
MAX_LISTED_ERRORS = 20
NATIVE = "native"  # the decode-time geometry of a split stored at its own image size


class ImageDataset(torch.utils.data.Dataset):
    """A decoded split: item i -> {"pixels": uint8 (3, H, W), "labels": ...}, optionally transformed.

    `rows` is the underlying `datasets.Dataset` (columns pixels, labels, source); `transform` maps a
    uint8 batch (B, 3, H, W) to another of the same shape (train-time augmentation). `__getitems__`
    fetches and transforms a whole batch in one call (torch's DataLoader uses it). All images of a
    split share one size (see `decode_split`), so a batch always stacks. "labels" is the class id
    (int) for single-label data, a float32 multi-hot tensor (K,) for multi-label data.
    """

    def __init__(self, rows: datasets.Dataset, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 num_labels: int | None = None):
        self.rows, self.transform, self.num_labels = rows, transform, num_labels
        self._pixels = PixelStore(rows)
        self._labels = label_array(rows, num_labels)  # (N,) int64, or (N, K) float32 multi-hot
        self._marks = {AT_MODEL_SIZE: True} if decoded_at_model_size(rows) else {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        pixels = torch.from_numpy(self._pixels.take(indices))  # (B, 3, H, W) uint8
        if self.transform is not None:
            pixels = self.transform(pixels)
        return [{"pixels": p, "labels": example_label(self._labels, i), **self._marks}
                for p, i in zip(pixels.unbind(0), indices)]

    @property
    def labels(self) -> list:
        """Class ids (single-label) or multi-hot rows (multi-label), in order."""
        return self._labels.tolist()

    @property
    def sources(self) -> list[str]:
        """Where each example came from (file path, or `<split>[<row>]` for embedded bytes)."""
        return column(self.rows, "source").tolist()

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> "ImageDataset":
        """The same rows with another batch transform (None: none)."""
        return ImageDataset(self.rows, transform, self.num_labels)

    def with_augmentation(self, cfg: AugmentConfig) -> "ImageDataset":
        """A view that augments each example with `cfg` (torch RNG)."""
        return self.with_transform(functools.partial(augment_batch, cfg=cfg) if cfg.enabled else None)


def label_array(rows: datasets.Dataset, num_labels: int | None) -> np.ndarray:
    """The labels of decoded or prepared rows: int64 (N,) class ids, or float32 (N, K) multi-hot rows
    when the label column holds lists (then `num_labels` = K is required)."""
    name = label_column_name(rows)
    if feature_names(rows.features[name]) is None or isinstance(rows.features[name], datasets.ClassLabel):
        return column(rows, name).astype(np.int64)
    ids = rows.select_columns([name])[name]
    return np.stack([multi_hot(row, num_labels) for row in ids]) if ids else np.zeros((0, num_labels), np.float32)


def example_label(labels: np.ndarray, index: int) -> int | torch.Tensor:
    """One example's label: an int class id, or a float32 (K,) multi-hot tensor."""
    return int(labels[index]) if labels.ndim == 1 else torch.from_numpy(labels[index])


def label_column_name(rows: datasets.Dataset) -> str:
    """"labels" in decoded rows, "label" in prepared (undecoded) rows."""
    return "labels" if "labels" in rows.column_names else "label"


@dataclass
class ImageSplits:
    """train / validation (None without one) / test, the class names and the task.

    task "single_label": examples carry an int class id; "multi_label": a float32 multi-hot (K,)
    tensor, which `ImageCollator` stacks into float (B, K) labels. Decoded (cached) splits are
    `ImageDataset`s; with `data.streaming` they are `streaming.LazyImageDataset` (random access to
    files) or `streaming.StreamingImageDataset` (sequential shards / hub streams), whose train split
    may have no length (`len_or_none`).
    """

    train: torch.utils.data.Dataset
    validation: torch.utils.data.Dataset | None
    test: torch.utils.data.Dataset
    label_names: list[str]
    skipped: list[str] = field(default_factory=list)  # "<file>: <reason>" of images dropped in skip mode
    task: str = "single_label"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}


def split_name(role: str, config: DataConfig) -> str:
    """The data set's name of a role's split ("train", "validation", "test" -> its own names)."""
    names = {"train": config.train_split, "test": config.eval_split}
    return names.get(role, config.validation_split or "validation")


def len_or_none(split) -> int | None:
    """The number of examples of a split, None when a stream does not know it."""
    try:
        return len(split)
    except TypeError:
        return None


def column(rows: datasets.Dataset, name: str) -> np.ndarray:
    """One column as a numpy array, read in one Arrow call (`rows[name]` iterates row by row)."""
    return rows.select_columns([name]).with_format("numpy")[:][name]


def apply_train_augmentation(split, cfg: AugmentConfig):
    """A view of `split` that augments each example with `cfg` (torch RNG); the input is unchanged."""
    return split.with_augmentation(cfg)


# ---- load_splits -----------------------------------------------------------------------------


def load_splits(config: DataConfig, seed: int = 42, preprocess: PreprocessConfig | None = None) -> ImageSplits:
    """Load, check, decode (cached, or on the fly with `data.streaming`) and split the configured data set.

    `preprocess` is needed for data sets of mixed image sizes, which are resized at decode, and when
    streaming (images are decoded at the model's size).
    """
    if config.streaming:
        from .streaming import load_streaming_splits

        return load_streaming_splits(config, seed, preprocess)
    roles = assign_roles(load_raw(config, streaming=False), config)
    prepared, label_names = prepare_roles(roles, config)
    cache = _cache_dir(config)
    decoded = {role: decode_split(rows, split_name(role, config), cache, preprocess) for role, rows in prepared.items()}
    decoded, skipped = _handle_bad_images(decoded, config.on_bad_image)
    train, validation, test = split_roles(decoded, config, seed)
    make = functools.partial(ImageDataset, num_labels=len(label_names))
    return ImageSplits(train=make(train), validation=None if validation is None else make(validation),
                       test=make(test), label_names=label_names, skipped=skipped, task=config.task)


# ---- columns and labels ----------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """Where a data set's images and labels are, and the label encoding shared by all its splits."""

    images: list[str]  # Image columns; several only for WebDataset members (jpg, png, ...): the first present
    label: LabelColumn
    encoder: LabelEncoder

    def image(self, example: dict) -> dict | None:
        return next((example[name] for name in self.images if example.get(name) is not None), None)


def dataset_columns(roles: Roles, config: DataConfig) -> Columns:
    """The columns of the train split, the class names, and (ClassLabel data) the same classes in every split."""
    images, label = detect_columns(roles.train.rows, config, roles.train.name)
    columns = Columns(images=images, label=label, encoder=class_encoder(roles, label, config))
    if columns.encoder.ids_are_positions:
        check_same_classes(present_roles(roles), label, config)
    return columns


def present_roles(roles: Roles) -> dict[str, RawSplit]:
    """The roles the data set provides (the others are carved out of train)."""
    return {role: split for role, split in (("train", roles.train), ("validation", roles.validation),
                                           ("test", roles.test)) if split is not None}


def prepare_roles(roles: Roles, config: DataConfig) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """The present roles' rows as (image: undecoded `Image`, label: ClassLabel or list of them), and the class names."""
    columns = dataset_columns(roles, config)
    prepared = {role: _prepare(split, columns, config.task) for role, split in present_roles(roles).items()}
    return prepared, columns.encoder.names


def detect_columns(rows, config: DataConfig, name: str) -> tuple[list[str], LabelColumn]:
    """The image column(s) (`data.image_column`, else the `Image` features) and the label column."""
    features = rows.features
    if features is None:
        raise DataError(f"{name}: the stream does not declare its features; set data.image_column and data.label_column")
    if config.image_column is not None:
        if config.image_column not in features:
            raise DataError(f"{name}: image_column {config.image_column!r} not in columns {list(features)}")
        images = [config.image_column]
    else:
        images = [column for column, feature in features.items() if isinstance(feature, datasets.Image)]
    if not images or (len(images) > 1 and not all(column in IMAGE_MEMBERS for column in images)):
        problem = "no" if not images else f"several ({images})"
        raise DataError(f"{name}: {problem} image column (Image feature) in columns {list(features)}; set data.image_column")
    return images, find_label_column(features, config.label_column, name)


def class_encoder(roles: Roles, label: LabelColumn, config: DataConfig) -> LabelEncoder:
    """Class names from the train split's `ClassLabel` feature, else its sorted distinct label values."""
    feature = roles.train.rows.features[label.column] if label.key is None else None
    names = feature_names(feature)
    is_list = isinstance(feature, (datasets.List, datasets.LargeList, list))
    if names is not None:
        if (config.task == "multi_label") != is_list:
            raise DataError(f"{roles.train.name}: label column {label} holds {'lists' if is_list else 'single classes'}; "
                            f"set data.task: {'multi_label' if is_list else 'single_label'}")
        return LabelEncoder(names, config.task, ids_are_positions=True)
    values = _label_values(roles.train, label)
    if config.task == "single_label" and any(isinstance(value, (list, tuple)) for value in values):
        raise DataError(f"{roles.train.name}: label column {label} holds lists; set data.task: multi_label")
    return LabelEncoder(distinct_names(values, config.task), config.task, ids_are_positions=False)


def _label_values(split: RawSplit, label: LabelColumn) -> list:
    if split.index is not None and split.label == label:
        return split.index.labels
    if isinstance(split.rows, datasets.IterableDataset):
        raise DataError(f"{split.name}: the class names are unknown (label column {label} is not a ClassLabel "
                        "feature, and a stream cannot be read ahead for them); use a local copy or a data set "
                        "with a ClassLabel label column")
    return [label.read({label.column: value}) for value in split.rows.select_columns([label.column])[label.column]]


def _prepare(split: RawSplit, columns: Columns, task: str) -> datasets.Dataset:
    """Keep one undecoded image column and the label ids, as `image` and `label`."""
    rows = split.rows
    if len(columns.images) == 1 and columns.label.key is None and columns.encoder.ids_are_positions:
        image, label = columns.images[0], columns.label.column
        rows = rows.select_columns([image, label]).cast_column(image, datasets.Image(decode=False))
        renames = {old: new for old, new in ((image, "image"), (label, "label")) if old != new}
        return rows.rename_columns(renames) if renames else rows
    for name in columns.images:
        rows = rows.cast_column(name, datasets.Image(decode=False))
    label_feature = datasets.ClassLabel(names=columns.encoder.names)
    features = datasets.Features({"image": datasets.Image(decode=False),
                                  "label": label_feature if task == "single_label" else datasets.List(label_feature)})
    return rows.map(_encode_batch, batched=True, fn_kwargs={"columns": columns, "name": split.name}, with_indices=True,
                    remove_columns=rows.column_names, features=features, desc="Reading labels")


def _encode_batch(batch: dict, indices: list[int], columns: Columns, name: str) -> dict:
    examples = [dict(zip(batch, values)) for values in zip(*batch.values())]
    images = [columns.image(example) for example in examples]
    labels = [columns.encoder.encode(columns.label.read(example), f"{name} row {index}")
              for example, index in zip(examples, indices)]
    return {"image": images, "label": labels}


def check_same_classes(splits: dict[str, RawSplit], label: LabelColumn, config: DataConfig) -> None:
    names = {role: feature_names(split.rows.features[label.column]) for role, split in splits.items()}
    for role, role_names in names.items():
        if role_names != names["train"]:
            split_name = config.eval_split if role == "test" else role
            raise DataError(f"{config.train_dir or config.dataset}: classes differ between {config.train_split} "
                            f"{names['train']} and {split_name} {role_names}")


def _cache_dir(config: DataConfig) -> Path:
    root = Path(config.cache_dir).expanduser() if config.cache_dir else Path(datasets.config.HF_DATASETS_CACHE)
    folder = root / "vit_finetune_decoded"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- decoding (cached) -----------------------------------------------------------------------


def decode_split(rows: datasets.Dataset, split: str, cache: Path, resize_to: PreprocessConfig | None) -> datasets.Dataset:
    """Decode every image of `rows` (columns image, label) into uint8 pixels, or reuse the cache file.

    Output columns: pixels (uint8 (3, H, W)), labels, source (path or `<split>[<row>]`), error ("" if
    the image decoded, else the reason).
    """
    native = _cache_file(cache, rows, None)
    if native.is_file():
        return datasets.Dataset.from_file(str(native))
    resized = _cache_file(cache, rows, resize_to)
    if resize_to is not None and resized.is_file():
        return datasets.Dataset.from_file(str(resized))
    size = uniform_size(rows)
    if size is not None:
        return _decode_to(rows, split, native, None, size)
    if resize_to is None:
        raise DataError(f"{split}: images differ in size; pass load_splits(..., preprocess=<PreprocessConfig>) "
                        "to resize them at decode")
    return _decode_to(rows, split, resized, resize_to, decoded_size(resize_to, split))


def _cache_file(cache: Path, rows: datasets.Dataset, resize_to: PreprocessConfig | None) -> Path:
    """Cache file of a split: its source fingerprint + the decode-time geometry (NATIVE: none)."""
    geometry = NATIVE
    if resize_to is not None:
        settings = [resize_to.height, resize_to.width, resize_to.shortest_edge, resize_to.resample,
                    resize_to.do_resize, resize_to.do_center_crop, resize_to.crop_height, resize_to.crop_width]
        geometry = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    return cache / f"decoded-{rows._fingerprint}-{geometry}.arrow"


def decoded_at_model_size(rows: datasets.Dataset) -> bool:
    """Whether decoded rows were resized (and cropped) to the model's input at decode (a split of mixed
    sizes): their cache file is named by that geometry instead of "native"."""
    return bool(rows.cache_files) and not rows.cache_files[0]["filename"].endswith(f"-{NATIVE}.arrow")


def decoded_size(resize_to: PreprocessConfig, split: str) -> tuple[int, int]:
    """(h, w) of images decoded at the model's size; a `DataError` when the processor gives none."""
    if resize_to.fixed_output_size is not None:
        return resize_to.fixed_output_size
    raise DataError(f"{split}: images differ in size and the processor gives no fixed output size "
                    "(set height/width or a centre crop)")


def _decode_to(rows: datasets.Dataset, split: str, target: Path, resize_to: PreprocessConfig | None,
               size: tuple[int, int]) -> datasets.Dataset:
    features = datasets.Features({
        "pixels": datasets.Array3D(shape=(3, *size), dtype="uint8"),
        "labels": rows.features["label"],
        "source": datasets.Value("string"),
        "error": datasets.Value("string"),
    })
    logger.info("decoding %d images of split %r into %s", len(rows), split, target)
    return rows.map(_decode_batch, batched=True, batch_size=DECODE_BATCH, with_indices=True,
                    fn_kwargs={"split": split, "resize_to": resize_to, "size": size},
                    remove_columns=rows.column_names, features=features, cache_file_name=str(target),
                    writer_batch_size=DECODE_BATCH, desc=f"Decoding {split} images")


def _decode_batch(batch: dict, indices: list[int], split: str, resize_to: PreprocessConfig | None,
                  size: tuple[int, int]) -> dict:
    pixels, sources, errors = [], [], []
    for image, index in zip(batch["image"], indices):
        source, data = image_source(image, split, index)
        try:
            pixels.append(pil_to_pixels(open_image(data, name=source), resize_to).numpy())
            errors.append("")
        except ImageFileError as err:
            pixels.append(np.zeros((3, *size), dtype=np.uint8))
            errors.append(str(err))
        sources.append(source)
    return {"pixels": pixels, "labels": batch["label"], "source": sources, "error": errors}


def image_source(image: dict, split: str, index: int) -> tuple[str, str | bytes]:
    """(name for messages, what to open) of an undecoded `Image` value; embedded bytes win over paths."""
    if image.get("bytes"):
        return image.get("path") or f"{split}[{index}]", image["bytes"]
    return image["path"], image["path"]


def uniform_size(rows: datasets.Dataset) -> tuple[int, int] | None:
    """(H, W) shared by every readable image (headers only), or None if sizes differ."""
    sizes = set()
    for index, image in enumerate(rows.select_columns(["image"]).with_format("arrow")[:]["image"].to_pylist()):
        sizes.add(_header_size(*image_source(image, "", index)))
        sizes.discard(None)
        if len(sizes) > 1:
            return None
    return sizes.pop() if sizes else (1, 1)


def _header_size(name: str, data: str | bytes) -> tuple[int, int] | None:
    try:
        stream = open_regular_file(data, name) if isinstance(data, str) else io.BytesIO(data)
        with stream, Image.open(stream) as image:
            width, height = image.size
        return height, width
    except Exception:  # unreadable files are reported by the decode step
        return None


def _handle_bad_images(decoded: dict, on_bad_image: str) -> tuple[dict, list[str]]:
    """Fail listing the unreadable images, or (skip mode) drop and report them."""
    errors = {split: column(rows, "error").tolist() for split, rows in decoded.items()}
    messages = [error for split_errors in errors.values() for error in split_errors if error]
    if not messages:
        return decoded, []
    if on_bad_image == "fail":
        listed = "\n  ".join(messages[:MAX_LISTED_ERRORS])
        more = f"\n  ... and {len(messages) - MAX_LISTED_ERRORS} more" if len(messages) > MAX_LISTED_ERRORS else ""
        raise DataError(f"{len(messages)} unreadable image(s) (set data.on_bad_image: skip to drop them):\n  {listed}{more}")
    logger.warning("skipping %d unreadable image(s): %s", len(messages), "; ".join(messages[:MAX_LISTED_ERRORS]))
    kept = {split: rows.select([i for i, error in enumerate(errors[split]) if not error])
            for split, rows in decoded.items()}
    return kept, messages


# ---- splitting -------------------------------------------------------------------------------


def split_roles(rows: dict[str, datasets.Dataset], config: DataConfig, seed: int
                ) -> tuple[datasets.Dataset, datasets.Dataset | None, datasets.Dataset]:
    """(train, validation or None, test): the missing roles carved out of train, stratified and seeded
    (test first, `test_fraction`; then validation, `validation_fraction` of the whole train split), then
    the `max_*_samples` subsets. Works on decoded and on prepared (undecoded) rows alike."""
    train = rows["train"]
    strata = label_strata(train)
    keep = np.arange(len(train))
    test = rows.get("test")
    if test is None:
        picked = stratified_sample(strata, max(1, round(config.test_fraction * len(train))), seed + 3)
        test, keep = train.select(picked), np.setdiff1d(keep, picked)
    validation = rows.get("validation")
    if validation is None and config.validation_fraction > 0:
        picked = keep[stratified_sample(strata[keep], max(1, round(config.validation_fraction * len(train))), seed)]
        validation, keep = train.select(picked), np.setdiff1d(keep, picked)
    if config.max_train_samples is not None and config.max_train_samples < len(keep):
        keep = keep[stratified_sample(strata[keep], config.max_train_samples, seed + 1)]
    validation = None if validation is None else _subset(validation, config.max_eval_samples, seed + 2)
    return train.select(keep), validation, _subset(test, config.max_eval_samples, seed)


def label_strata(rows: datasets.Dataset) -> np.ndarray:
    """(N,) the class id of each row; one stratum for multi-label rows (a uniform seeded sample)."""
    name = label_column_name(rows)
    if isinstance(rows.features[name], datasets.ClassLabel):
        return column(rows, name).astype(np.int64)
    return np.zeros(len(rows), dtype=np.int64)


def _subset(rows: datasets.Dataset, count: int | None, seed: int) -> datasets.Dataset:
    if count is None or count >= len(rows):
        return rows
    return rows.select(stratified_sample(label_strata(rows), count, seed))


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` sorted indices drawn without replacement, each class in proportion to its size.

    Class quotas use the largest-remainder rule (ties to the lower class id); members are drawn with
    numpy's PCG64 seeded by `seed`, so the same labels and seed give the same sample.
    """
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    quotas = _largest_remainder(sizes, count)
    picked = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quotas)]
    return np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)


def _largest_remainder(sizes: np.ndarray, count: int) -> np.ndarray:
    exact = sizes * count / sizes.sum()
    quotas = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: count - quotas.sum()]] += 1
    return np.minimum(quotas, sizes)
