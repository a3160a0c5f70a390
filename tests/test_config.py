"""Run-config parsing: YAML + overrides into typed objects, with errors that name key and file."""

from pathlib import Path

import pytest
import yaml

from vit_finetune.config import CONFIGS_DIR, apply_override, build_model_section, load_run_config, run_config_from_dict
from vit_finetune.modeling.config import EncoderConfig, encoder_config_for_size, run_config_fields
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
        ({"model": {"checkpoint": "x", "size": "base"}}, [], "model.size: applies only to random init"),
        ({"model": {"checkpoint": "x", "drop_path_rate": 1.0}}, [], "model.drop_path_rate: must be in [0, 1)"),
        ({"model": {"hidden_size": 100, "num_attention_heads": 3}}, [], "model: hidden_size 100 not divisible by 3"),
        ({"model": {"size": "gigantic"}}, [], "model: unknown model size 'gigantic'"),
        ({"model": {"encoder": {"hidden_size": 8}}}, [], "model: unknown key(s) ['encoder']"),
        ({"model": {"attn_implementation": "flash"}}, [], "model.attn_implementation: must be one of"),
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


def test_model_keys_are_the_encoder_fields_marked_for_run_configs():
    assert run_config_fields(with_checkpoint=True) == (
        "image_size", "hidden_dropout_prob", "attention_probs_dropout_prob", "patch_dropout", "drop_path_rate")
    assert {"patch_size", "hidden_size", "num_hidden_layers", "patch_dropout"} <= set(run_config_fields())
    defaults = EncoderConfig()
    for name in run_config_fields():
        section = build_model_section({"size": "base", name: getattr(defaults, name)})
        assert section.encoder == {name: getattr(defaults, name)}
        assert getattr(section.random_init_encoder(), name) == getattr(defaults, name)
    with pytest.raises(ConfigError, match="model: unknown key.*'layer_norm_eps'.*known keys: .*'hidden_size'"):
        build_model_section({"layer_norm_eps": 1e-6})  # a family detail, not a run-config key


def test_resolved_config_reads_back_as_the_same_run(tmp_path):
    run = load_run_config("cifar10-tiny", ["model.num_hidden_layers=6", "model.attn_implementation=eager"])
    assert run.to_dict()["model"]["num_hidden_layers"] == 6  # flat, as the YAML writes it
    again = run_config_from_dict(run.to_dict())
    assert again.model == run.model and again.model.attn_implementation == "eager"


def test_cifar10_tiny_trains_its_named_size_as_is():
    model = load_run_config("cifar10-tiny").model
    assert model.size == "cifar-tiny" and model.encoder == {"patch_dropout": 0.5}
    assert model.random_init_encoder() == encoder_config_for_size("cifar-tiny", patch_dropout=0.5)
    tiny = encoder_config_for_size("cifar-tiny")
    sizes = (tiny.hidden_size, tiny.num_hidden_layers, tiny.num_attention_heads, tiny.intermediate_size)
    assert sizes == (128, 4, 4, 256) and (tiny.image_size, tiny.patch_size) == (32, 4)
