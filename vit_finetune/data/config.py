"""Typed settings of the data pipeline: where the images come from and how training augments them.

Fields are plain types (str/int/float/bool/None/Literal/tuple/nested dataclass) so that the generic
YAML validator (`vit_finetune.typed.build_dataclass`) can build them; `__post_init__` checks values
and raises ValueError naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vit_finetune.typed import ConfigError

WHERE = "data.augment"


def _check(ok: bool, key: str, requirement: str, value) -> None:
    """Raise ConfigError `data.augment.<key>: <requirement>, got <value>` unless `ok`."""
    if not ok:
        raise ConfigError(f"{WHERE}.{key}: {requirement}, got {value!r}")


@dataclass
class ColorJitterConfig:
    """torchvision's ColorJitter: factors uniform in [max(0, 1 - v), 1 + v], hue shift in [-hue, hue]; 0 = off."""

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def __post_init__(self) -> None:
        for key in ("brightness", "contrast", "saturation"):
            _check(getattr(self, key) >= 0, f"color_jitter.{key}", "must be >= 0", getattr(self, key))
        _check(0 <= self.hue <= 0.5, "color_jitter.hue", "must be in [0, 0.5]", self.hue)

    @property
    def enabled(self) -> bool:
        return max(self.brightness, self.contrast, self.saturation, self.hue) > 0


@dataclass
class RandomErasingConfig:
    """timm's RandomErasing on the normalised batch: with probability p, 1..max_count boxes of area
    fraction in `scale` and aspect ratio in `ratio`, filled by `mode`: "const" zeros, "rand" one normal
    colour per box, "pixel" normal noise per pixel (timm's train.py default)."""

    p: float = 0.0
    mode: Literal["const", "rand", "pixel"] = "pixel"
    scale: tuple[float, float] = (0.02, 1 / 3)
    ratio: tuple[float, float] = (0.3, 1 / 0.3)
    max_count: int = 1

    def __post_init__(self) -> None:
        self.scale, self.ratio = tuple(self.scale), tuple(self.ratio)
        _check(0 <= self.p <= 1, "random_erasing.p", "must be in [0, 1]", self.p)
        _check(self.mode in ("const", "rand", "pixel"), "random_erasing.mode", "must be 'const', 'rand' or 'pixel'",
               self.mode)
        _check(0 < self.scale[0] <= self.scale[1] <= 1, "random_erasing.scale", "need 0 < min <= max <= 1", self.scale)
        _check(0 < self.ratio[0] <= self.ratio[1], "random_erasing.ratio", "need 0 < min <= max", self.ratio)
        _check(self.max_count >= 1, "random_erasing.max_count", "must be >= 1", self.max_count)


@dataclass
class AugmentConfig:
    """Train-time augmentation. Evaluation never augments. `AugmentConfig.none()` turns everything off.

    On decoded uint8 images (3, H, W), keeping their size, in this order (`augment.augment_batch`):
    crop: "random_resized" = random area `scale` / aspect `ratio` crop resized back to (H, W)
    (the Inception / HF-notebook recipe); "random_padded" = zero-pad `padding` px on each side and
    crop (H, W) at a random offset (the classic CIFAR recipe); "none" = no crop. Then the flip, then
    auto_augment: null, a timm RandAugment string ("rand-m9-mstd0.5"), "trivial" (torchvision's
    TrivialAugmentWide) or a timm AugMix string ("augmix-m3-w3"); then color_jitter.

    On the collated training batch (the Trainer's compute_loss): random_erasing (`erasing.py`), then
    mixup / cutmix with soft targets (`mixup.py`, timm's Mixup): mixup_alpha, cutmix_alpha (0 = off),
    mixup_prob (chance that a batch / pair / image is mixed), mixup_switch_prob (chance of cutmix when
    both are on), mixup_mode ("batch", "pair", "elem"), label_smoothing of the soft targets.
    """

    crop: Literal["none", "random_resized", "random_padded"] = "random_resized"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    padding: int = 4
    horizontal_flip: bool = True
    auto_augment: str | None = None
    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    random_erasing: RandomErasingConfig = field(default_factory=RandomErasingConfig)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: Literal["batch", "pair", "elem"] = "batch"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        self.scale, self.ratio = tuple(self.scale), tuple(self.ratio)
        _check(self.crop in ("none", "random_resized", "random_padded"), "crop",
               "must be 'none', 'random_resized' or 'random_padded'", self.crop)
        _check(0.0 < self.scale[0] <= self.scale[1] <= 1.0, "scale", "need 0 < min <= max <= 1", self.scale)
        _check(0.0 < self.ratio[0] <= self.ratio[1], "ratio", "need 0 < min <= max", self.ratio)
        _check(self.padding >= 0, "padding", "must be >= 0", self.padding)
        self._check_auto_augment()
        for key in ("mixup_alpha", "cutmix_alpha"):
            _check(getattr(self, key) >= 0, key, "must be >= 0 (0 = off)", getattr(self, key))
        for key in ("mixup_prob", "mixup_switch_prob"):
            _check(0 <= getattr(self, key) <= 1, key, "must be in [0, 1]", getattr(self, key))
        _check(self.mixup_mode in ("batch", "pair", "elem"), "mixup_mode", "must be 'batch', 'pair' or 'elem'",
               self.mixup_mode)
        _check(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)", self.label_smoothing)

    def _check_auto_augment(self) -> None:
        if self.auto_augment is None:
            return
        from .auto_augment import parse_auto_augment  # the parser lives with the policies it builds

        try:
            parse_auto_augment(self.auto_augment)
        except ValueError as err:
            raise ConfigError(f"{WHERE}.auto_augment: {err}") from None

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all (no crop, no flip, nothing else)."""
        return cls(crop="none", horizontal_flip=False)

    @property
    def enabled(self) -> bool:
        """Whether anything happens to the uint8 images (crop, flip, auto_augment, colour jitter)."""
        return self.crop != "none" or self.horizontal_flip or self.auto_augment is not None or self.color_jitter.enabled

    @property
    def mixup_enabled(self) -> bool:
        """Whether training batches are mixed (then the loss needs the soft targets of `mixup.mix_batch`)."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mixup_prob > 0

    @property
    def soft_targets(self) -> bool:
        """Whether training labels become soft targets (B, num_classes): mixing or label smoothing is on."""
        return self.mixup_enabled or self.label_smoothing > 0


@dataclass
class DataConfig:
    """Which data set to load, how to split it, and whether to stream it.

    dataset: a Hugging Face hub id (e.g. "uoft-cs/cifar10", with `dataset_config_name` / `revision`),
    or a local directory holding an imagefolder layout `<split>/<class>/<image>` (or `<split>/` with a
    `metadata.jsonl` / `metadata.csv` naming each file's label(s)), a `datasets.save_to_disk`
    DatasetDict, or shard files (`*.tar` WebDataset, `*.parquet` with image bytes) whose splits are
    named in their file names as `datasets` infers them (`train-00000.tar`, `test-00000.tar`); or a
    glob / brace pattern of shard files (`shards/train-{00000..00099}.tar`).
    train_dir / validation_dir / test_dir: one folder (or shard pattern) per split instead of `dataset`.
    validation_split: the data set's own split for model selection (default: `validation` when the
    data set has one); without one, validation_fraction of train is carved out (stratified by class,
    seeded; 0 disables it). A data set with only a train split also gets its test split carved out
    (test_fraction), with a warning. max_train_samples / max_eval_samples: stratified, seeded subsets
    of train and of validation/test for quick runs (the first max_eval_samples of a stream).
    task: "single_label" (one class per image) or "multi_label" (a list of class names per image,
    multi-hot float labels). streaming: read and decode images on the fly in the DataLoader workers
    instead of decoding them once into a cache (`streaming.py`; shuffle_buffer_size examples of
    encoded bytes per worker for sequential sources). on_bad_image: "fail" stops with the list of
    unreadable images; "skip" drops them and reports them. cache_dir: where decoded pixels are cached
    (default: the `datasets` cache, `HF_DATASETS_CACHE`). sampler: the order of the training examples:
    "random" (the Trainer's permutation per epoch) or "balanced" (class-balanced draws with replacement,
    `data/sampling.py`).
    """

    dataset: str = "uoft-cs/cifar10"
    train_split: str = "train"
    eval_split: str = "test"
    validation_fraction: float = 0.02
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    task: Literal["single_label", "multi_label"] = "single_label"
    streaming: bool = False
    shuffle_buffer_size: int = 1000
    train_dir: str | None = None
    validation_dir: str | None = None
    test_dir: str | None = None
    validation_split: str | None = None
    test_fraction: float = 0.1
    dataset_config_name: str | None = None
    revision: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    on_bad_image: Literal["fail", "skip"] = "fail"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_dir: str | None = None
    sampler: Literal["random", "balanced"] = "random"

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ValueError("data.dataset: must name a hub id or a local directory")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"data.validation_fraction: must be in [0, 1), got {self.validation_fraction}")
        self._check_layout()
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"data.{name}: must be >= 1 or null, got {value}")
        if self.on_bad_image not in ("fail", "skip"):
            raise ValueError(f"data.on_bad_image: must be 'fail' or 'skip', got {self.on_bad_image!r}")
        if self.sampler not in ("random", "balanced"):
            raise ValueError(f"data.sampler: must be 'random' or 'balanced', got {self.sampler!r}")
        if self.train_split == self.eval_split:
            raise ValueError(f"data.eval_split: must differ from train_split ({self.train_split!r})")

    def _check_layout(self) -> None:
        if self.task not in ("single_label", "multi_label"):
            raise ValueError(f"data.task: must be 'single_label' or 'multi_label', got {self.task!r}")
        if not 0.0 < self.test_fraction < 1.0 or self.test_fraction + self.validation_fraction >= 1.0:
            raise ValueError(f"data.test_fraction: must be in (0, 1) and leave training data beside "
                             f"validation_fraction={self.validation_fraction}, got {self.test_fraction}")
        if self.shuffle_buffer_size < 1:
            raise ValueError(f"data.shuffle_buffer_size: must be >= 1, got {self.shuffle_buffer_size}")
        for key in ("validation_dir", "test_dir"):
            if getattr(self, key) is not None and self.train_dir is None:
                raise ValueError(f"data.{key}: needs data.train_dir (the folders replace data.dataset together)")
        if self.validation_split is not None and self.validation_split in (self.train_split, self.eval_split):
            raise ValueError(f"data.validation_split: must differ from train_split and eval_split, "
                             f"got {self.validation_split!r}")

    @property
    def is_local(self) -> bool:
        """Whether the data comes from local files (folders, shards, save_to_disk) rather than the hub."""
        return self.train_dir is not None or looks_local(self.dataset)


def looks_local(dataset: str) -> bool:
    """A path (existing, or written as one: ./x, /x, ~/x) or a file pattern, rather than a hub id."""
    return Path(dataset).expanduser().exists() or dataset.startswith((".", "/", "~")) or any(c in dataset for c in "*?[{")
