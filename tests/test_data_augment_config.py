"""The augmentation keys of `data.augment`: parsed from YAML overrides, validated with errors naming the key."""

import pytest

from vit_finetune.config import load_run_config
from vit_finetune.typed import ConfigError

STRONG = ["data.augment.auto_augment=rand-m9-mstd0.5", "data.augment.random_erasing.p=0.25",
          "data.augment.random_erasing.mode=pixel", "data.augment.mixup_alpha=0.8", "data.augment.cutmix_alpha=1.0",
          "data.augment.label_smoothing=0.1", "data.augment.color_jitter.brightness=0.4", "data.augment.mixup_mode=elem"]


def test_strong_recipe_keys_load():
    augment = load_run_config("cifar10-tiny", STRONG).data.augment
    assert augment.auto_augment == "rand-m9-mstd0.5" and augment.random_erasing.p == 0.25
    assert augment.mixup_enabled and augment.enabled and augment.color_jitter.brightness == 0.4
    assert augment.mixup_mode == "elem" and augment.label_smoothing == 0.1


def test_defaults_add_nothing():
    augment = load_run_config("cifar10-tiny").data.augment
    assert augment.auto_augment is None and augment.random_erasing.p == 0 and not augment.mixup_enabled
    assert not augment.color_jitter.enabled


@pytest.mark.parametrize("override, fragment", [
    ("data.augment.auto_augment=rand-x9", "data.augment.auto_augment: 'rand-x9': cannot read section 'x9'"),
    ("data.augment.auto_augment=rand-m9-p2", "data.augment.auto_augment: 'rand-m9-p2': out of range: prob=2.0"),
    ("data.augment.auto_augment=autoaug", "data.augment.auto_augment: 'autoaug': unknown policy 'autoaug'"),
    ("data.augment.random_erasing.p=1.5", "data.augment.random_erasing.p: must be in [0, 1], got 1.5"),
    ("data.augment.random_erasing.mode=noise", "data.augment.random_erasing.mode: must be one of"),
    ("data.augment.random_erasing.max_count=0", "data.augment.random_erasing.max_count: must be >= 1, got 0"),
    ("data.augment.random_erasing.scale=[0.5, 0.1]", "data.augment.random_erasing.scale: need 0 < min <= max <= 1"),
    ("data.augment.color_jitter.hue=0.7", "data.augment.color_jitter.hue: must be in [0, 0.5], got 0.7"),
    ("data.augment.color_jitter.contrast=-1", "data.augment.color_jitter.contrast: must be >= 0, got -1"),
    ("data.augment.color_jitter=0.4", "data.augment.color_jitter: expected a mapping"),
    ("data.augment.mixup_alpha=-0.2", "data.augment.mixup_alpha: must be >= 0 (0 = off), got -0.2"),
    ("data.augment.cutmix_alpha=abc", "data.augment.cutmix_alpha: expected a number, got 'abc'"),
    ("data.augment.mixup_prob=2", "data.augment.mixup_prob: must be in [0, 1], got 2"),
    ("data.augment.mixup_switch_prob=-0.5", "data.augment.mixup_switch_prob: must be in [0, 1], got -0.5"),
    ("data.augment.mixup_mode=pairs", "data.augment.mixup_mode: must be one of"),
    ("data.augment.label_smoothing=1", "data.augment.label_smoothing: must be in [0, 1), got 1"),
    ("data.augment.crop=center", "data.augment.crop: must be one of"),
])
def test_bad_augment_values_name_the_key_and_value(override, fragment):
    with pytest.raises(ConfigError) as caught:
        load_run_config("cifar10-tiny", [override])
    assert fragment in str(caught.value)
