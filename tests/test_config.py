"""Run-config parsing: YAML + overrides into typed objects, with errors that name key and file."""

from pathlib import Path

import pytest
import yaml

from vit_finetune.config import CONFIGS_DIR, apply_override, load_run_config
from vit_finetune.typed import ConfigError


def write_config(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
def test_shipped_configs_validate(name):
    run = load_run_config(name)
    assert run.training.output_dir.startswith("runs/")
    assert run.data.validation_fraction == pytest.approx(0.02)


def test_bare_name_and_path_resolve_to_the_same_config():
    by_name = load_run_config("cifar10")
    by_path = load_run_config(CONFIGS_DIR / "cifar10.yaml")
    assert by_name.to_dict() == by_path.to_dict()
    assert by_name.model.checkpoint == "google/vit-base-patch16-224-in21k"


def test_yaml_scientific_notation_string_becomes_float(tmp_path):
    path = write_config(tmp_path, {"training": {"learning_rate": "5e-5"}})
    run = load_run_config(path, ["training.weight_decay=1e-2"])
    assert run.training.arguments["learning_rate"] == 5e-5
    assert run.training.arguments["weight_decay"] == 0.01


def test_overrides_set_nested_keys_as_yaml_scalars(tmp_path):
    path = write_config(tmp_path, {"data": {"dataset": "x"}})
    run = load_run_config(path, ["data.augment.horizontal_flip=false", "training.max_steps=50", "model.pooling=mean"])
    assert run.data.augment.horizontal_flip is False
    assert run.training.arguments["max_steps"] == 50
    assert run.model.pooling == "mean"


def test_bare_no_is_the_no_strategy_not_false(tmp_path):
    path = write_config(tmp_path, {"training": {"save_strategy": False}})  # what YAML makes of `save_strategy: no`
    run = load_run_config(path, ["training.eval_strategy=no"])
    assert run.training.arguments["eval_strategy"] == "no"
    assert run.training.arguments["save_strategy"] == "no"


def test_warmup_ratio_maps_to_fractional_warmup_steps(tmp_path):
    run = load_run_config(write_config(tmp_path, {"training": {"warmup_ratio": 0.1}}))
    assert run.training.arguments["warmup_steps"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "tree, overrides, fragment",
    [
        ({"training": {"learning_rat": 1e-3}}, [], "learning_rat"),
        ({"training": {"learning_rate": "three"}}, [], "training.learning_rate: expected a number, got 'three'"),
        ({"training": {"per_device_train_batch_size": -8}}, [], "training.per_device_train_batch_size: must be positive"),
        ({"model": {"hiden_size": 8}}, [], "hiden_size"),
        ({"model": {"pooling": "max"}}, [], "model.pooling: must be one of"),
        ({"model": {"checkpoint": "x", "hidden_size": 8}}, [], "model.hidden_size: applies only to random init"),
        ({"data": {"validation_fraction": 1.5}}, [], "validation_fraction"),
        ({"optimizer": {}}, [], "unknown section"),
        ({"training": {"max_steps": 0}}, [], "training.max_steps"),
        ({}, ["training.learning_rate=abc"], "training.learning_rate"),
        ({}, ["nonsense"], "expected section.key=value"),
    ],
)
def test_bad_configs_name_the_key_and_file(tmp_path, tree, overrides, fragment):
    path = write_config(tmp_path, tree)
    with pytest.raises(ConfigError) as caught:
        load_run_config(path, overrides)
    assert fragment in str(caught.value)
    if overrides != ["nonsense"]:
        assert str(path) in str(caught.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_run_config(tmp_path / "nope.yaml")


def test_override_refuses_to_descend_into_a_scalar():
    with pytest.raises(ConfigError, match="not a section"):
        apply_override({"training": 3}, "training.seed=1")
