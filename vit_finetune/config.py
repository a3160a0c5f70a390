"""Run configuration: a YAML file plus dotted `key=value` overrides, parsed once into typed objects.

    run = load_run_config("cifar10-tiny", ["training.max_steps=50", "training.learning_rate=5e-5"])

A bare name is looked up in the repository's `configs/` folder (`cifar10` -> `configs/cifar10.yaml`);
a path is used as given. Unknown keys, wrong types and out-of-range values raise `ConfigError` naming
the key and the file before anything heavy starts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vit_finetune.data.config import DataConfig
from vit_finetune.finetune_config import FinetuneConfig
from vit_finetune.modeling.config import (Arch, AttnImplementation, EncoderConfig, Pooling, check_values,
                                          encoder_config_for_size, run_config_fields)
from vit_finetune.precision import PRECISIONS
from vit_finetune.typed import ConfigError, build_dataclass, coerce, coerce_fields, shown
from vit_finetune.yaml_config import load_yaml

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
SECTIONS = ("model", "data", "training", "finetune")


@dataclass
class ModelSection:
    """Which model to fine-tune, or the sizes of one to train from scratch.

    Besides the keys below, `model.<field>` sets an `EncoderConfig` field marked for run configs
    (`image_size`, the dropout rates and `drop_path_rate`; for a random init also `hidden_size`,
    `num_hidden_layers`, ... : see `modeling.config.run_config_fields`); those are collected in `encoder`.
    """

    checkpoint: str | None = None  # HF hub id or local folder; None = random init
    arch: Arch = "vit"
    size: str | None = None  # random init: a named size from modeling.config.SIZES (default "base")
    pooling: Pooling | None = None
    # Attention kernel for training: sdpa, eager, or auto = the faster of the two, measured at start-up.
    attn_implementation: Literal["auto", AttnImplementation] = "auto"
    # Preprocessing for a model without a preprocessor_config.json (random init).
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    encoder: dict[str, Any] = field(default_factory=dict)  # EncoderConfig fields set as `model.<field>`

    def __post_init__(self) -> None:
        try:
            check_values(self.encoder)
        except ValueError as err:
            raise ConfigError(f"model.{err}") from None
        if self.checkpoint is not None:
            self._check_fine_tuning_fields()
        else:
            self._check_random_init()
        if any(s <= 0 for s in self.image_std):
            raise ConfigError(f"model.image_std: must be positive, got {self.image_std}")

    def _check_fine_tuning_fields(self) -> None:
        allowed = run_config_fields(with_checkpoint=True)
        fixed = [name for name in self.encoder if name not in allowed]
        if self.size is not None:
            fixed.insert(0, "size")
        if fixed:
            raise ConfigError(f"model.{fixed[0]}: applies only to random init, but model.checkpoint is set "
                              f"({self.checkpoint}); the checkpoint's config.json defines it")

    def _check_random_init(self) -> None:
        try:
            self.random_init_encoder()
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None

    def random_init_encoder(self) -> EncoderConfig:
        """The encoder to train from scratch: `model.size` (default `base`) with the set fields on top."""
        return encoder_config_for_size(self.size or "base", arch=self.arch, **self.encoder)


def build_model_section(mapping: Any) -> ModelSection:
    """The `model:` keys: ModelSection's own, plus the EncoderConfig fields collected into `encoder`."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"model: expected a mapping of keys, got {type(mapping).__name__}")
    encoder_keys = run_config_fields()
    known = ({f.name for f in dataclasses.fields(ModelSection)} - {"encoder"}) | set(encoder_keys)
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(f"model: unknown key(s) {unknown}; known keys: {sorted(known)}")
    encoder = {k: v for k, v in mapping.items() if k in encoder_keys and v is not None}
    own = {k: v for k, v in mapping.items() if k not in encoder_keys}
    return build_dataclass(ModelSection, own | {"encoder": coerce_fields(EncoderConfig, encoder, "model")}, "model")


@dataclass
class TrainingSection:
    """`TrainingArguments` fields under their HF names, plus the run-level keys below."""

    arguments: dict[str, Any] = field(default_factory=dict)  # validated TrainingArguments kwargs
    resume_from_checkpoint: bool | str = False  # True = newest complete checkpoint in output_dir
    overwrite_output_dir: bool = False
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (auto: bf16 where the hardware is fast at it)
    # Weighted cross-entropy: null, "balanced" (n_samples / (n_classes * count), scikit-learn's) or one weight
    # per class in label order (training/losses.py).
    class_weights: str | list[float] | None = None

    @property
    def output_dir(self) -> str:
        return self.arguments["output_dir"]


@dataclass
class RunConfig:
    """Everything one training run needs, validated."""

    model: ModelSection
    data: DataConfig
    training: TrainingSection
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    source: str = "<memory>"  # the file it came from, for messages

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (written next to the trained model)."""
        return {
            "model": _model_to_dict(self.model),
            "data": dataclasses.asdict(self.data),
            "training": _training_to_dict(self.training),
            "finetune": dataclasses.asdict(self.finetune),
        }


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A bare name is looked up in `configs/` (with or without `.yaml`); a path is used as given."""
    path = Path(name_or_path)
    candidates = [path]
    if len(path.parts) == 1:
        candidates += [CONFIGS_DIR / path.name, CONFIGS_DIR / f"{path.name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file not found: {name_or_path} (looked in: {', '.join(map(str, candidates))})")


def load_run_config(name_or_path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply `section.key=value` overrides, and validate it."""
    path = resolve_config_path(name_or_path)
    tree = load_yaml(path.read_text(), str(path)) or {}
    for override in overrides or []:
        apply_override(tree, override)
    try:
        return run_config_from_dict(tree, source=str(path))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def apply_override(tree: dict, override: str) -> None:
    """Set `a.b.c=value` in `tree`; the value is parsed as a YAML scalar (so `5e-5` is a number)."""
    key, sep, raw = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {shown(override)}: expected section.key=value")
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {shown(override)}: {part} is not a section")
    node[leaf] = load_yaml(raw, f"override {shown(override)}") if raw.strip() else None


def run_config_from_dict(tree: dict, source: str = "<memory>") -> RunConfig:
    """Validate a parsed config tree into a RunConfig."""
    if not isinstance(tree, dict):
        raise ConfigError(f"the config must be a mapping with sections {', '.join(SECTIONS)}")
    unknown = sorted(set(tree) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; expected {', '.join(SECTIONS)}")
    model = build_model_section(tree.get("model"))
    data = build_dataclass(DataConfig, tree.get("data"), "data")
    training = build_training_section(tree.get("training") or {})
    _check_streaming(data, training)
    _check_multi_label(data, training)
    finetune = build_dataclass(FinetuneConfig, tree.get("finetune"), "finetune")
    return RunConfig(model=model, data=data, training=training, finetune=finetune, source=source)


def _check_streaming(data: DataConfig, training: TrainingSection) -> None:
    """A hub stream's length is unknown before it is read: the run must be counted in steps; and a stream
    has no labels up front to balance the sampling by."""
    if data.streaming and data.sampler == "balanced":
        raise ConfigError("data.sampler: balanced needs every training label up front; a stream (data.streaming) "
                          "is read in order from its shards")
    if data.streaming and not data.is_local and training.arguments.get("max_steps", -1) <= 0:
        raise ConfigError(f"training.max_steps: required with data.streaming for the hub data set {data.dataset!r} "
                          "(a stream's length is unknown); local folders and shards are counted, so epochs work there")


def _check_multi_label(data: DataConfig, training: TrainingSection) -> None:
    """Settings defined for one class per image that multi-hot targets do not have (yet): refused by name."""
    if data.task != "multi_label":
        return
    refused = {"data.augment.mixup_alpha / cutmix_alpha": data.augment.mixup_enabled,
               "data.augment.label_smoothing": data.augment.label_smoothing > 0,
               "training.class_weights": training.class_weights is not None,
               "data.sampler: balanced": data.sampler == "balanced"}
    for key, is_set in refused.items():
        if is_set:
            raise ConfigError(f"{key}: not supported with data.task=multi_label (defined for one class per image)")


def build_training_section(mapping: dict) -> TrainingSection:
    """Split run-level keys from TrainingArguments fields and validate both."""
    if not isinstance(mapping, dict):
        raise ConfigError("training: expected a mapping of keys")
    mapping = dict(mapping)
    section = TrainingSection(
        resume_from_checkpoint=coerce(mapping.pop("resume_from_checkpoint", False), bool | str,
                                      "training.resume_from_checkpoint"),
        overwrite_output_dir=coerce(mapping.pop("overwrite_output_dir", False), bool, "training.overwrite_output_dir"),
        precision=_pop_precision(mapping),
        class_weights=_class_weights(mapping.pop("class_weights", None)),
    )
    if "warmup_ratio" in mapping:  # transformers 5 folds the ratio into warmup_steps (a float < 1)
        mapping["warmup_steps"] = _warmup_ratio(mapping.pop("warmup_ratio"))
    section.arguments = validate_training_arguments(mapping)
    return section


def validate_training_arguments(mapping: dict) -> dict[str, Any]:
    """Check names and types against `transformers.TrainingArguments`, and common ranges."""
    from transformers import TrainingArguments

    arguments = coerce_fields(TrainingArguments, mapping, "training", show_known=False)
    _check_training_ranges(arguments)
    arguments.setdefault("output_dir", "runs/default")
    return arguments


def _check_training_ranges(arguments: dict[str, Any]) -> None:
    positive = ("per_device_train_batch_size", "per_device_eval_batch_size", "learning_rate",
                "num_train_epochs", "gradient_accumulation_steps", "logging_steps")
    for key in positive:
        if key in arguments:
            _check_positive(arguments[key], f"training.{key}")
    for key in ("weight_decay", "max_grad_norm", "label_smoothing_factor", "warmup_steps",
                "dataloader_num_workers"):
        if arguments.get(key) is not None and arguments[key] < 0:
            raise ConfigError(f"training.{key}: must be >= 0, got {arguments[key]}")
    if arguments.get("max_steps", -1) == 0 or arguments.get("max_steps", -1) < -1:
        raise ConfigError(f"training.max_steps: must be positive (or -1 for epochs), got {arguments['max_steps']}")


def _pop_precision(mapping: dict) -> str:
    """`precision: auto|bf16|fp16|fp32`; `bf16: auto` / `fp16: auto` are accepted as aliases."""
    precision = coerce(mapping.pop("precision", "auto"), Literal[PRECISIONS], "training.precision")
    for flag in ("bf16", "fp16"):
        value = mapping.get(flag)
        if value == "auto":
            mapping.pop(flag)
            precision = "auto"
        elif value is True:
            mapping.pop(flag)
            precision = flag
        elif value is False:
            mapping.pop(flag)
            precision = "fp32" if precision == flag else precision
    return precision


def _warmup_ratio(value: Any) -> float:
    ratio = coerce(value, float, "training.warmup_ratio")
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"training.warmup_ratio: must be in [0, 1), got {ratio}")
    return ratio


def _class_weights(value: Any) -> str | list[float] | None:
    """`training.class_weights`: null, "balanced", or a list of positive numbers (its length is checked against
    the classes once the data set is loaded)."""
    if value is None or value == "balanced":
        return value
    numbers = isinstance(value, list) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not numbers:
        raise ConfigError(f"training.class_weights: expected null, 'balanced' or a list of one positive number per "
                          f"class, got {value!r}")
    if any(v <= 0 for v in value):
        raise ConfigError(f"training.class_weights: every weight must be positive, got {value}")
    return [float(v) for v in value]


def _check_positive(value: float | int | None, where: str) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{where}: must be positive, got {value}")


def _training_to_dict(training: TrainingSection) -> dict[str, Any]:
    return {**training.arguments, "resume_from_checkpoint": training.resume_from_checkpoint,
            "overwrite_output_dir": training.overwrite_output_dir, "precision": training.precision,
            "class_weights": training.class_weights}


def _model_to_dict(model: ModelSection) -> dict[str, Any]:
    """The model section as its YAML keys (the `encoder` fields flat, as they are written)."""
    fields = dataclasses.asdict(model)
    encoder = fields.pop("encoder")
    return fields | encoder
