"""Typed settings of the data pipeline: where the images come from and how training augments them.

Fields are plain types (str/int/float/bool/None/Literal/tuple/nested dataclass) so that the generic
YAML validator (`vit_finetune.typed.build_dataclass`) can build them; `__post_init__` checks values
and raises ValueError naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class AugmentConfig:
    """Train-time augmentation on decoded uint8 images (3, H, W); the output keeps the input size.

    crop: "random_resized" = random area `scale` / aspect `ratio` crop resized back to (H, W)
    (the Inception / HF-notebook recipe); "random_padded" = zero-pad `padding` px on each side and
    crop (H, W) at a random offset (the classic CIFAR recipe); "none" = no crop.
    Evaluation never augments. `AugmentConfig.none()` turns everything off.
    """

    crop: Literal["none", "random_resized", "random_padded"] = "random_resized"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    padding: int = 4
    horizontal_flip: bool = True

    def __post_init__(self) -> None:
        self.scale, self.ratio = tuple(self.scale), tuple(self.ratio)
        if self.crop not in ("none", "random_resized", "random_padded"):
            raise ValueError(f"augment.crop: unknown crop {self.crop!r}")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"augment.scale: need 0 < min <= max <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"augment.ratio: need 0 < min <= max, got {self.ratio}")
        if self.padding < 0:
            raise ValueError(f"augment.padding: must be >= 0, got {self.padding}")

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all (no crop, no flip)."""
        return cls(crop="none", horizontal_flip=False)

    @property
    def enabled(self) -> bool:
        return self.crop != "none" or self.horizontal_flip


@dataclass
class DataConfig:
    """Which data set to load and how to split it.

    dataset: a Hugging Face hub id (e.g. "uoft-cs/cifar10"), or a local directory holding either an
    imagefolder layout `<split>/<class>/<image>` or a `datasets.save_to_disk` DatasetDict.
    validation_fraction: share of the train split carved out (stratified by class, seeded) for model
    selection; 0 disables it. max_train_samples / max_eval_samples: stratified, seeded subsets of
    train and of validation/test for quick runs. on_bad_image: "fail" stops before training with the
    list of unreadable images; "skip" drops them and reports them. cache_dir: where decoded pixels are
    cached (default: the `datasets` cache, `HF_DATASETS_CACHE`).
    """

    dataset: str = "uoft-cs/cifar10"
    train_split: str = "train"
    eval_split: str = "test"
    validation_fraction: float = 0.02
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    image_column: str | None = None
    label_column: str | None = None
    on_bad_image: Literal["fail", "skip"] = "fail"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ValueError("data.dataset: must name a hub id or a local directory")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"data.validation_fraction: must be in [0, 1), got {self.validation_fraction}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"data.{name}: must be >= 1 or null, got {value}")
        if self.on_bad_image not in ("fail", "skip"):
            raise ValueError(f"data.on_bad_image: must be 'fail' or 'skip', got {self.on_bad_image!r}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers: must be >= 0, got {self.num_workers}")
        if self.train_split == self.eval_split:
            raise ValueError(f"data.eval_split: must differ from train_split ({self.train_split!r})")
