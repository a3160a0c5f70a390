"""Typed model configs with Hugging Face field names, built from an HF `config.json` or a named size.

`EncoderConfig` describes the from-scratch ViT / SigLIP encoder; `ClassifierConfig` adds the pooling
and the label set.  Family details that break exactness if hard-coded (LayerNorm eps, GELU flavour,
CLS token) live in `ARCH_DEFAULTS`; model sizes live in `SIZES`.  The `EncoderConfig` fields that a
run config may set (`model.hidden_size`, ...) carry a `run_config` marker in their field metadata.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import transformers

Arch = Literal["vit", "siglip"]
Pooling = Literal["cls", "mean", "map"]
AttnImplementation = Literal["sdpa", "eager"]  # HF's names: fused scaled_dot_product_attention, or plain ops
# HF's `config.problem_type`: None and "single_label_classification" train a softmax / cross-entropy head,
# "multi_label_classification" a sigmoid / binary cross-entropy head (one independent score per label).
ProblemType = Literal["single_label_classification", "multi_label_classification"]
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification")

# Per-family details, as the HF configs and checkpoints have them.
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "vit": dict(
        layer_norm_eps=1e-12,
        hidden_act="gelu",
        qkv_bias=True,
        class_token=True,
        default_pooling="cls",
    ),
    "siglip": dict(
        layer_norm_eps=1e-6,
        hidden_act="gelu_pytorch_tanh",
        qkv_bias=True,
        class_token=False,
        default_pooling="mean",  # what SiglipForImageClassification does
    ),
}

# Model sizes as data: ViT / DeiT papers, SigLIP so400m, and small from-scratch sizes for 32-px images.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120),
    "so400m": dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304),
    "cifar-tiny": dict(  # the model of configs/cifar10-tiny.yaml
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
        image_size=32, patch_size=4,
    ),
    "cifar-small": dict(  # ViT-Lite-7/4 (Hassani et al., "Escaping the Big Data Paradigm")
        hidden_size=256, num_hidden_layers=7, num_attention_heads=4, intermediate_size=512,
        image_size=32, patch_size=4,
    ),
}
SIZE_LETTERS = {"Ti": "tiny", "S": "small", "B": "base", "L": "large", "H": "huge"}

HF_VISION_MODEL_TYPES = {"vit": "vit", "siglip": "siglip", "siglip_vision_model": "siglip"}


# Field metadata marking the EncoderConfig fields that a run config may set as `model.<field>`.
RUN_CONFIG_ANY = {"run_config": "any"}  # also when fine-tuning a checkpoint (positions are interpolated)
RUN_CONFIG_RANDOM_INIT = {"run_config": "random_init"}  # only for a random init: a checkpoint defines them

PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "patch_dropout")


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of the from-scratch ViT / SigLIP vision encoder (HF field names)."""

    arch: Arch = "vit"
    image_size: int = field(default=224, metadata=RUN_CONFIG_ANY)
    patch_size: int = field(default=16, metadata=RUN_CONFIG_RANDOM_INIT)
    num_channels: int = 3
    hidden_size: int = field(default=768, metadata=RUN_CONFIG_RANDOM_INIT)
    num_hidden_layers: int = field(default=12, metadata=RUN_CONFIG_RANDOM_INIT)
    num_attention_heads: int = field(default=12, metadata=RUN_CONFIG_RANDOM_INIT)
    intermediate_size: int = field(default=3072, metadata=RUN_CONFIG_RANDOM_INIT)
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    hidden_dropout_prob: float = field(default=0.0, metadata=RUN_CONFIG_RANDOM_INIT)
    attention_probs_dropout_prob: float = field(default=0.0, metadata=RUN_CONFIG_RANDOM_INIT)
    initializer_range: float = 0.02
    # share of patch tokens dropped per image while training (timm's PatchDropout)
    patch_dropout: float = field(default=0.0, metadata=RUN_CONFIG_RANDOM_INIT)
    class_token: bool = True

    def __post_init__(self) -> None:
        check_values(dataclasses.asdict(self))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by {self.num_attention_heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} not divisible by patch_size {self.patch_size}")

    @property
    def grid_size(self) -> int:
        """Patches per side: image_size // patch_size."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patch tokens per image (N)."""
        return self.grid_size**2

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches (1 with a CLS token, else 0)."""
        return int(self.class_token)

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> EncoderConfig:
        """Build from an HF `config.json` dict (model_type `vit`, `siglip` or `siglip_vision_model`)."""
        model_type = hf_config["model_type"]
        if model_type not in HF_VISION_MODEL_TYPES:
            raise ValueError(f"unsupported model_type {model_type!r}; expected one of {sorted(HF_VISION_MODEL_TYPES)}")
        if model_type == "vit":
            return _encoder_from_hf_vit(_hf_config_object("vit", hf_config))
        vision = hf_config["vision_config"] if model_type == "siglip" else hf_config
        return _encoder_from_hf_siglip(_hf_config_object("siglip_vision_model", vision))

    def to_hf_vision_dict(self) -> dict[str, Any]:
        """The HF config fields of this encoder (ViTConfig or SiglipVisionConfig keyword arguments)."""
        common = dict(
            image_size=self.image_size, patch_size=self.patch_size, num_channels=self.num_channels,
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            layer_norm_eps=self.layer_norm_eps, hidden_act=self.hidden_act,
        )
        if self.arch == "vit":
            return common | dict(
                qkv_bias=self.qkv_bias, hidden_dropout_prob=self.hidden_dropout_prob,
                attention_probs_dropout_prob=self.attention_probs_dropout_prob,
                initializer_range=self.initializer_range,
            )
        return common | dict(attention_dropout=self.attention_probs_dropout_prob)


def _hf_config_object(model_type: str, fields: dict[str, Any]) -> transformers.PreTrainedConfig:
    """Let the transformers config class fill in the defaults that a `config.json` may omit."""
    fields = {k: v for k, v in fields.items() if k != "model_type"}
    return transformers.CONFIG_MAPPING[model_type](**fields)


def _encoder_from_hf_vit(hf: transformers.ViTConfig) -> EncoderConfig:
    return EncoderConfig(
        arch="vit", image_size=hf.image_size, patch_size=hf.patch_size, num_channels=hf.num_channels,
        hidden_size=hf.hidden_size, num_hidden_layers=hf.num_hidden_layers,
        num_attention_heads=hf.num_attention_heads, intermediate_size=hf.intermediate_size,
        layer_norm_eps=hf.layer_norm_eps, hidden_act=hf.hidden_act, qkv_bias=hf.qkv_bias,
        hidden_dropout_prob=hf.hidden_dropout_prob, attention_probs_dropout_prob=hf.attention_probs_dropout_prob,
        initializer_range=hf.initializer_range, class_token=True,
    )


def _encoder_from_hf_siglip(hf: transformers.SiglipVisionConfig) -> EncoderConfig:
    return EncoderConfig(
        arch="siglip", image_size=hf.image_size, patch_size=hf.patch_size, num_channels=hf.num_channels,
        hidden_size=hf.hidden_size, num_hidden_layers=hf.num_hidden_layers,
        num_attention_heads=hf.num_attention_heads, intermediate_size=hf.intermediate_size,
        layer_norm_eps=hf.layer_norm_eps, hidden_act=hf.hidden_act, qkv_bias=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=hf.attention_dropout,
        class_token=False,
    )


def check_values(values: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first EncoderConfig field out of range: counts and sizes (the int
    fields) must be positive, dropout shares in [0, 1)."""
    for name, value in values.items():
        if name in PROBABILITIES and not 0.0 <= value < 1.0:
            raise ValueError(f"{name}: must be in [0, 1), got {value}")
        if type(value) is int and value <= 0:
            raise ValueError(f"{name}: must be positive, got {value}")


def run_config_fields(with_checkpoint: bool = False) -> tuple[str, ...]:
    """The EncoderConfig fields a run config may set as `model.<field>`, for a random init or a checkpoint."""
    allowed = ("any",) if with_checkpoint else ("any", "random_init")
    return tuple(f.name for f in dataclasses.fields(EncoderConfig) if f.metadata.get("run_config") in allowed)


def encoder_config_for_size(name: str, arch: Arch = "vit", **overrides: Any) -> EncoderConfig:
    """Encoder config for a named size: `tiny`/`small`/`base`/`large`/`huge`/`so400m`, `cifar-tiny`,
    `cifar-small`, or big_vision style `"B/16"` (size letter / patch size). Overrides win."""
    size, patch = _parse_size_name(name)
    family = {k: v for k, v in ARCH_DEFAULTS[arch].items() if k != "default_pooling"}
    fields = dict(arch=arch) | family | SIZES[size] | patch | overrides
    return EncoderConfig(**fields)


def _parse_size_name(name: str) -> tuple[str, dict[str, int]]:
    if name in SIZES:
        return name, {}
    match = re.fullmatch(r"(Ti|S|B|L|H)/(\d+)", name)
    if match is None:
        raise ValueError(f"unknown model size {name!r}; known: {sorted(SIZES)} or e.g. 'B/16'")
    return SIZE_LETTERS[match.group(1)], {"patch_size": int(match.group(2))}


@dataclass
class ClassifierConfig:
    """Encoder + pooling (`cls`, `mean` over patch tokens, `map` attention pooling) + linear head.

    Not frozen, like HF configs: the HF Trainer sets `model.config.use_cache`. `id2label` has int
    keys in memory; JSON stores them as strings, and `labels_from_json` is the one place that reads
    them back. `label2id` is derived from `id2label`. `problem_type` is HF's (None: single-label).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pooling: Pooling = "cls"
    num_labels: int = 2
    id2label: dict[int, str] = field(default_factory=dict)  # empty: LABEL_0, LABEL_1, ...
    problem_type: ProblemType | None = None
    label2id: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        if self.problem_type not in (None, *PROBLEM_TYPES):
            raise ValueError(f"problem_type: must be one of {PROBLEM_TYPES} or null, got {self.problem_type!r}")
        self.id2label = dict(self.id2label) or default_labels(self.num_labels)
        if sorted(self.id2label) != list(range(self.num_labels)):
            raise ValueError(f"id2label keys must be the ints 0..{self.num_labels - 1}, got {list(self.id2label)}")
        if self.pooling == "cls" and not self.encoder.class_token:
            raise ValueError(f"pooling 'cls' needs a CLS token; {self.encoder.arch} has none (use 'mean' or 'map')")
        self.label2id = {name: index for index, name in self.id2label.items()}

    @property
    def multi_label(self) -> bool:
        """Whether the head scores each label independently (sigmoid) instead of one class (softmax)."""
        return self.problem_type == "multi_label_classification"

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> ClassifierConfig:
        """Build from an HF `config.json` dict; pooling is the family default (ViT `cls`, SigLIP `mean`)."""
        encoder = EncoderConfig.from_hf_config(hf_config)
        id2label = labels_from_json(hf_config.get("id2label", {})) or default_labels(2)
        pooling = ARCH_DEFAULTS[encoder.arch]["default_pooling"]
        return cls(encoder=encoder, pooling=pooling, num_labels=len(id2label), id2label=id2label,
                   problem_type=hf_config.get("problem_type"))

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data, for JSON (which writes the `id2label` keys as strings)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ClassifierConfig:
        """Inverse of `to_dict`, also after a JSON round trip."""
        fields = {k: v for k, v in fields.items() if k != "label2id"}
        encoder = EncoderConfig(**fields.pop("encoder"))
        return cls(encoder=encoder, **fields | {"id2label": labels_from_json(fields.get("id2label", {}))})

    def with_labels(self, id2label: dict[int, str]) -> ClassifierConfig:
        """A copy with another label set."""
        return dataclasses.replace(self, num_labels=len(id2label), id2label=id2label)


def labels_from_json(id2label: Mapping[str | int, str]) -> dict[int, str]:
    """`id2label` as read from JSON (string keys) -> int keys: the one place that converts them."""
    return {int(index): name for index, name in id2label.items()}


def default_labels(num_labels: int) -> dict[int, str]:
    """HF-style placeholder names `LABEL_0`, `LABEL_1`, ..."""
    return {i: f"LABEL_{i}" for i in range(num_labels)}
