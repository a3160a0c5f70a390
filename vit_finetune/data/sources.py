"""Load a data set (hub id, imagefolder, save_to_disk) into decoded, cached train / validation / test.

    splits = load_splits(DataConfig(dataset="../shared/data/cifar10"), seed=42)
    train = apply_train_augmentation(splits.train, config.augment)   # eval splits stay unaugmented
    batch = ImageCollator(preprocess_cfg)([train[0], train[1]])

Decoding: every image goes through `images.open_image` once and is stored as uint8 (3, H, W) in an
Arrow file under the cache folder, named by the source's fingerprint (for an imagefolder: a hash of
all paths, sizes and mtimes), so later runs memory-map it instead of decoding. A split whose images
all share one size is stored at that native size (CIFAR: 32x32, resized per batch by the collator);
a split of mixed sizes needs `preprocess=` and is resized at decode exactly as `resize_batch` would.

Subsets: the validation split is a stratified (per-class proportional), seeded sample of the train
split; `max_train_samples` / `max_eval_samples` take stratified, seeded samples of train and of
validation / test. Indices stay in file order (sorted) within each subset.
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
from datasets import load_dataset, load_from_disk
from PIL import Image

from .augment import augment_batch
from .config import AugmentConfig, DataConfig
from .errors import DataError
from .folders import scan_image_folder
from .images import ImageFileError, open_image, open_regular_file
from .pixel_store import PixelStore
from .preprocess import PreprocessConfig, pil_to_pixels

logger = logging.getLogger(__name__)
DECODE_BATCH = 500
MAX_LISTED_ERRORS = 20


class ImageDataset(torch.utils.data.Dataset):
    """A decoded split: item i -> {"pixels": uint8 (3, H, W), "labels": int}, optionally transformed.

    `rows` is the underlying `datasets.Dataset` (columns pixels, labels, source); `transform` maps a
    uint8 batch (B, 3, H, W) to another of the same shape (train-time augmentation). `__getitems__`
    fetches and transforms a whole batch in one call (torch's DataLoader uses it). All images of a
    split share one size (see `decode_split`), so a batch always stacks.
    """

    def __init__(self, rows: datasets.Dataset, transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.rows = rows
        self.transform = transform
        self._pixels = PixelStore(rows)
        self._labels = column(rows, "labels").astype(np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        pixels = torch.from_numpy(self._pixels.take(indices))  # (B, 3, H, W) uint8
        if self.transform is not None:
            pixels = self.transform(pixels)
        return [{"pixels": p, "labels": int(self._labels[i])} for p, i in zip(pixels.unbind(0), indices)]

    @property
    def labels(self) -> list[int]:
        return self._labels.tolist()

    @property
    def sources(self) -> list[str]:
        """Where each example came from (file path, or `<split>[<row>]` for embedded bytes)."""
        return column(self.rows, "source").tolist()

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> "ImageDataset":
        """The same rows with another batch transform (None: none)."""
        return ImageDataset(self.rows, transform)


@dataclass
class ImageSplits:
    """train / validation (None when validation_fraction is 0) / test, and the class names."""

    train: ImageDataset
    validation: ImageDataset | None
    test: ImageDataset
    label_names: list[str]
    skipped: list[str] = field(default_factory=list)  # "<file>: <reason>" of images dropped in skip mode

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}


def column(rows: datasets.Dataset, name: str) -> np.ndarray:
    """One column as a numpy array, read in one Arrow call (`rows[name]` iterates row by row)."""
    return rows.select_columns([name]).with_format("numpy")[:][name]


def apply_train_augmentation(split: ImageDataset, cfg: AugmentConfig) -> ImageDataset:
    """A view of `split` that augments each example with `cfg` (torch RNG); the input is unchanged."""
    return split.with_transform(functools.partial(augment_batch, cfg=cfg) if cfg.enabled else None)


# ---- load_splits -----------------------------------------------------------------------------


def load_splits(config: DataConfig, seed: int = 42, preprocess: PreprocessConfig | None = None) -> ImageSplits:
    """Load, check, decode (cached) and split the configured data set.

    `preprocess` is needed only for data sets of mixed image sizes, which are resized at decode.
    """
    raw = load_raw(config)
    image_column, label_column = detect_columns(raw[config.train_split], config)
    raw = {split: _prepare(raw[split], image_column, label_column) for split in (config.train_split, config.eval_split)}
    label_names = _check_same_classes(raw[config.train_split], raw[config.eval_split], config)
    cache = _cache_dir(config)
    decoded = {split: decode_split(rows, split, cache, preprocess) for split, rows in raw.items()}
    decoded, skipped = _handle_bad_images(decoded, config.on_bad_image)
    train, validation = _train_validation(decoded[config.train_split], config, seed)
    test = _subset(decoded[config.eval_split], config.max_eval_samples, seed)
    return ImageSplits(train=ImageDataset(train), validation=None if validation is None else ImageDataset(validation),
                       test=ImageDataset(test), label_names=label_names, skipped=skipped)


def load_raw(config: DataConfig) -> datasets.DatasetDict:
    """The undecoded splits of a local imagefolder / save_to_disk folder, or of a hub data set."""
    path = Path(config.dataset).expanduser()
    splits = (config.train_split, config.eval_split)
    if path.exists() or config.dataset.startswith((".", "/", "~")):
        return _load_local(path, splits)
    try:
        raw = load_dataset(config.dataset, cache_dir=config.cache_dir)
    except Exception as err:
        raise DataError(f"{config.dataset}: not a local directory, and loading it as a hub data set failed: {err}") from err
    return _require_splits(raw, splits, config.dataset)


def _load_local(path: Path, splits: tuple[str, str]) -> datasets.DatasetDict:
    if not path.is_dir():
        raise DataError(f"{path}: data set directory does not exist" if not path.exists() else f"{path}: not a directory")
    if (path / "dataset_dict.json").is_file():
        return _require_splits(_load_saved(path), splits, str(path))
    if (path / "state.json").is_file():
        raise DataError(f"{path}: a single saved Dataset; save a DatasetDict with splits {list(splits)}")
    return scan_image_folder(path, splits)


def _load_saved(path: Path) -> datasets.DatasetDict:
    """A `save_to_disk` folder; `datasets` cannot reload a saved empty split (IndexError), so name it."""
    try:
        return load_from_disk(str(path))
    except IndexError as err:
        raise DataError(f"{path}: cannot read this save_to_disk folder (an empty split?): {err}") from err


def _require_splits(raw: datasets.DatasetDict, splits: tuple[str, str], name: str) -> datasets.DatasetDict:
    missing = [split for split in splits if split not in raw]
    if missing:
        raise DataError(f"{name}: no split {missing} (found {sorted(raw)})")
    return raw


def detect_columns(rows: datasets.Dataset, config: DataConfig) -> tuple[str, str]:
    """(image column, label column): given in the config, else the `Image` and `ClassLabel` features."""
    image = config.image_column or _find_feature(rows, datasets.Image, "image", "image_column")
    label = config.label_column or _find_feature(rows, datasets.ClassLabel, "label", "label_column")
    for column, key in ((image, "image_column"), (label, "label_column")):
        if column not in rows.column_names:
            raise DataError(f"{config.dataset}: {key} {column!r} not in columns {rows.column_names}")
    return image, label


def _find_feature(rows: datasets.Dataset, kind: type, what: str, key: str) -> str:
    found = [name for name, feature in rows.features.items() if isinstance(feature, kind)]
    if len(found) != 1:
        problem = "no" if not found else f"several ({found})"
        raise DataError(f"{problem} {what} column ({kind.__name__} feature) in columns "
                        f"{rows.column_names}; set data.{key}")
    return found[0]


def _prepare(rows: datasets.Dataset, image_column: str, label_column: str) -> datasets.Dataset:
    """Keep the image (undecoded) and label (as ClassLabel) columns, renamed `image` / `label`."""
    rows = rows.select_columns([image_column, label_column])
    if not isinstance(rows.features[label_column], datasets.ClassLabel):
        rows = rows.class_encode_column(label_column)  # sorted distinct values become the classes
    rows = rows.cast_column(image_column, datasets.Image(decode=False))
    renames = {old: new for old, new in ((image_column, "image"), (label_column, "label")) if old != new}
    return rows.rename_columns(renames) if renames else rows


def _check_same_classes(train: datasets.Dataset, test: datasets.Dataset, config: DataConfig) -> list[str]:
    train_names, test_names = train.features["label"].names, test.features["label"].names
    if train_names != test_names:
        raise DataError(f"{config.dataset}: classes differ between {config.train_split} {train_names} "
                        f"and {config.eval_split} {test_names}")
    return list(train_names)


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
    return _decode_to(rows, split, resized, resize_to, _decoded_size(resize_to, split))


def _cache_file(cache: Path, rows: datasets.Dataset, resize_to: PreprocessConfig | None) -> Path:
    """Cache file of a split: its source fingerprint + the decode-time geometry ("native": none)."""
    geometry = "native"
    if resize_to is not None:
        settings = [resize_to.height, resize_to.width, resize_to.shortest_edge, resize_to.resample,
                    resize_to.do_resize, resize_to.do_center_crop, resize_to.crop_height, resize_to.crop_width]
        geometry = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
    return cache / f"decoded-{rows._fingerprint}-{geometry}.arrow"


def _decoded_size(resize_to: PreprocessConfig, split: str) -> tuple[int, int]:
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
        source, data = _image_source(image, split, index)
        try:
            pixels.append(pil_to_pixels(open_image(data, name=source), resize_to).numpy())
            errors.append("")
        except ImageFileError as err:
            pixels.append(np.zeros((3, *size), dtype=np.uint8))
            errors.append(str(err))
        sources.append(source)
    return {"pixels": pixels, "labels": batch["label"], "source": sources, "error": errors}


def _image_source(image: dict, split: str, index: int) -> tuple[str, str | bytes]:
    """(name for messages, what to open) of an undecoded `Image` value; embedded bytes win over paths."""
    if image.get("bytes"):
        return image.get("path") or f"{split}[{index}]", image["bytes"]
    return image["path"], image["path"]


def uniform_size(rows: datasets.Dataset) -> tuple[int, int] | None:
    """(H, W) shared by every readable image (headers only), or None if sizes differ."""
    sizes = set()
    for index, image in enumerate(rows.select_columns(["image"]).with_format("arrow")[:]["image"].to_pylist()):
        sizes.add(_header_size(*_image_source(image, "", index)))
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


def _train_validation(rows: datasets.Dataset, config: DataConfig, seed: int) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    labels = column(rows, "labels")
    count = round(config.validation_fraction * len(labels))
    if config.validation_fraction > 0 and count == 0:
        count = 1
    validation = stratified_sample(labels, count, seed) if count else np.array([], dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), validation)
    if config.max_train_samples is not None and config.max_train_samples < len(train):
        train = train[stratified_sample(labels[train], config.max_train_samples, seed + 1)]
    if not count:
        return rows.select(train), None
    return rows.select(train), _subset(rows.select(validation), config.max_eval_samples, seed + 2)


def _subset(rows: datasets.Dataset, count: int | None, seed: int) -> datasets.Dataset:
    if count is None or count >= len(rows):
        return rows
    return rows.select(stratified_sample(column(rows, "labels"), count, seed))


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
