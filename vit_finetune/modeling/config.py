"""Typed model configs with Hugging Face field names, built from an HF `config.json` or a named size.

`EncoderConfig` describes the from-scratch ViT / SigLIP encoder; `ClassifierConfig` adds the pooling
and the label set.  Family details that break exactness if hard-coded (LayerNorm eps, GELU flavour,
CLS token) live in `ARCH_DEFAULTS`; model sizes live in `SIZES`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import transformers

Arch = Literal["vit", "siglip"]
Pooling = Literal["cls", "mean", "map"]

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
    "cifar-tiny": dict(
        hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=384,
        image_size=32, patch_size=4,
    ),
    "cifar-small": dict(  # ViT-Lite-7/4 (Hassani et al., "Escaping the Big Data Paradigm")
        hidden_size=256, num_hidden_layers=7, num_attention_heads=4, intermediate_size=512,
        image_size=32, patch_size=4,
    ),
}
SIZE_LETTERS = {"Ti": "tiny", "S": "small", "B": "base", "L": "large", "H": "huge"}

HF_VISION_MODEL_TYPES = {"vit": "vit", "siglip": "siglip", "siglip_vision_model": "siglip"}


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of the from-scratch ViT / SigLIP vision encoder (HF field names)."""

    arch: Arch = "vit"
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    patch_dropout: float = 0.0  # share of patch tokens dropped per image while training (timm's PatchDropout)
    class_token: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by {self.num_attention_heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} not divisible by patch_size {self.patch_size}")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ValueError(f"patch_dropout must be in [0, 1), got {self.patch_dropout}")

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


@dataclass  # not frozen: the HF Trainer sets `model.config.use_cache`
class ClassifierConfig:
    """Encoder + pooling (`cls`, `mean` over patch tokens, `map` attention pooling) + linear head."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pooling: Pooling = "cls"
    num_labels: int = 2
    id2label: dict[int, str] = field(default_factory=dict)
    label2id: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        id2label = {int(k): v for k, v in self.id2label.items()} or default_labels(self.num_labels)
        if len(id2label) != self.num_labels:
            raise ValueError(f"num_labels={self.num_labels} but id2label has {len(id2label)} entries")
        if self.pooling == "cls" and not self.encoder.class_token:
            raise ValueError(f"pooling 'cls' needs a CLS token; {self.encoder.arch} has none (use 'mean' or 'map')")
        object.__setattr__(self, "id2label", id2label)
        object.__setattr__(self, "label2id", {v: k for k, v in id2label.items()})

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> ClassifierConfig:
        """Build from an HF `config.json` dict; pooling is the family default (ViT `cls`, SigLIP `mean`)."""
        encoder = EncoderConfig.from_hf_config(hf_config)
        id2label = {int(k): v for k, v in hf_config.get("id2label", {}).items()} or default_labels(2)
        pooling = ARCH_DEFAULTS[encoder.arch]["default_pooling"]
        return cls(encoder=encoder, pooling=pooling, num_labels=len(id2label), id2label=id2label)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (id2label keys as strings, like HF config.json)."""
        fields = dataclasses.asdict(self)
        fields["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return fields

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ClassifierConfig:
        """Inverse of `to_dict`."""
        fields = dict(fields)
        encoder = EncoderConfig(**fields.pop("encoder"))
        return cls(encoder=encoder, **fields)

    def with_labels(self, id2label: dict[int, str]) -> ClassifierConfig:
        """A copy with another label set."""
        return dataclasses.replace(self, num_labels=len(id2label), id2label=id2label, label2id={})


def default_labels(num_labels: int) -> dict[int, str]:
    """HF-style placeholder names `LABEL_0`, `LABEL_1`, ..."""
    return {i: f"LABEL_{i}" for i in range(num_labels)}
