"""Typed model configs with Hugging Face field names, built from an HF `config.json` or a named size.

`EncoderConfig` describes the one from-scratch encoder for every supported family (ViT, SigLIP, DeiT,
DINOv2 with and without registers, CLIP vision, ViT-MAE); `ClassifierConfig` adds the pooling and the
label set.  Family details that break exactness if hard-coded (LayerNorm eps, GELU flavour, CLS and
distillation tokens, LayerScale, where the final LayerNorm applies) live in `ARCH_DEFAULTS`; model sizes
live in `SIZES`.  The `EncoderConfig` fields that a
run config may set (`model.hidden_size`, ...) carry a `run_config` marker in their field metadata.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import transformers

Arch = Literal["vit", "siglip", "deit", "dinov2", "dinov2_with_registers", "clip", "vit_mae"]
# cls: the CLS token; mean: mean of the patch tokens; map: SigLIP attention pooling; cls_mean: CLS and
# mean patch token side by side (Dinov2ForImageClassification); cls_distill: the mean of a CLS head and a
# distillation-token head (DeiTForImageClassificationWithTeacher).
Pooling = Literal["cls", "mean", "map", "cls_mean", "cls_distill"]
# Where the final LayerNorm applies: every token (ViT); only the CLS token, mean pooling reading the
# un-normalised tokens (CLIP's post_layernorm); the pooled vector (MAE fine-tuning's fc_norm).
FinalNorm = Literal["tokens", "cls", "pooled"]
AttnImplementation = Literal["sdpa", "eager"]  # HF's names: fused scaled_dot_product_attention, or plain ops

# Per-family details, as the HF configs and checkpoints have them; HF config.json values override the
# first four, the rest is the family's structure (config.json does not say it).
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "vit": dict(layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True, class_token=True, default_pooling="cls"),
    "siglip": dict(
        layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", qkv_bias=True, class_token=False,
        default_pooling="mean",  # what SiglipForImageClassification does
    ),
    "deit": dict(
        layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True, class_token=True, distillation_token=True,
        default_pooling="cls_distill",  # the hub's distilled DeiT checkpoints (model_type deit)
    ),
    "dinov2": dict(
        layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True, class_token=True, layerscale_value=1.0,
        default_pooling="cls_mean",  # Dinov2ForImageClassification
    ),
    "dinov2_with_registers": dict(
        layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True, class_token=True, layerscale_value=1.0,
        num_register_tokens=4, interpolate_antialias=True, default_pooling="cls_mean",
    ),
    "clip": dict(
        layer_norm_eps=1e-5, hidden_act="quick_gelu", qkv_bias=True, class_token=True, pre_norm=True,
        patch_bias=False, final_norm="cls", default_pooling="mean",  # CLIPForImageClassification
    ),
    "vit_mae": dict(
        layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True, class_token=True, sincos_positions=True,
        final_norm="pooled", default_pooling="mean",  # the MAE paper's fine-tuning
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

# HF model_type -> our family; the composite types hold the vision tower under `vision_config`.
HF_VISION_MODEL_TYPES = {
    "vit": "vit", "siglip": "siglip", "siglip_vision_model": "siglip", "deit": "deit", "dinov2": "dinov2",
    "dinov2_with_registers": "dinov2_with_registers", "clip": "clip", "clip_vision_model": "clip",
    "vit_mae": "vit_mae",
}
COMPOSITE_MODEL_TYPES = {"siglip": "siglip_vision_model", "clip": "clip_vision_model"}
# Our family -> the model_type of its HF vision config.
HF_VISION_CONFIG_TYPES = {arch: COMPOSITE_MODEL_TYPES.get(arch, arch) for arch in ARCH_DEFAULTS}
# Our field name -> HF config field name, where the family names it differently.
HF_FIELD_RENAMES = {
    "siglip": {"attention_probs_dropout_prob": "attention_dropout"},
    "clip": {"attention_probs_dropout_prob": "attention_dropout"},
}
# Our fields that HF configs hold with another meaning (HF's DINOv2 drop_path_rate is one rate for every layer).
NOT_FROM_HF = ("drop_path_rate", "patch_dropout")


# Field metadata marking the EncoderConfig fields that a run config may set as `model.<field>`.
RUN_CONFIG_ANY = {"run_config": "any"}  # also when fine-tuning a checkpoint (shapes stay; positions are interpolated)
RUN_CONFIG_RANDOM_INIT = {"run_config": "random_init"}  # only for a random init: a checkpoint defines them

PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "patch_dropout", "drop_path_rate")
COUNTS_FROM_ZERO = ("num_register_tokens",)


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of the from-scratch vision encoder (HF field names).

    The fields after `class_token` are the family details that `ARCH_DEFAULTS` sets: their defaults
    describe ViT, and the encoder reads only these fields, never `arch` (which names the checkpoint
    layout for conversion).
    """

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
    hidden_dropout_prob: float = field(default=0.0, metadata=RUN_CONFIG_ANY)
    attention_probs_dropout_prob: float = field(default=0.0, metadata=RUN_CONFIG_ANY)
    initializer_range: float = 0.02
    # share of patch tokens dropped per image while training (timm's PatchDropout)
    patch_dropout: float = field(default=0.0, metadata=RUN_CONFIG_ANY)
    # stochastic depth: the last layer's per-sample drop rate, rising linearly from 0 at the first (DeiT, timm)
    drop_path_rate: float = field(default=0.0, metadata=RUN_CONFIG_ANY)
    class_token: bool = True
    distillation_token: bool = False  # DeiT: a second learned token after the CLS token
    num_register_tokens: int = 0  # DINOv2 registers: learned tokens after the CLS token, without positions
    layerscale_value: float | None = None  # DINOv2 LayerScale: initial per-channel scale of each branch
    use_swiglu_ffn: bool = False  # DINOv2 giant: SwiGLU MLP (intermediate_size is its hidden width)
    pre_norm: bool = False  # CLIP: LayerNorm on the embeddings before the first layer
    patch_bias: bool = True  # CLIP's patch embedding has no bias
    final_norm: FinalNorm = "tokens"
    interpolate_antialias: bool = False  # DINOv2 with registers resizes its position grid with antialiasing
    sincos_positions: bool = False  # MAE: a random init fills the position table with fixed 2-D sin-cos

    def __post_init__(self) -> None:
        check_values(dataclasses.asdict(self))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by {self.num_attention_heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} not divisible by patch_size {self.patch_size}")
        if self.distillation_token and not self.class_token:
            raise ValueError("distillation_token needs class_token")

    @property
    def grid_size(self) -> int:
        """Patches per side: image_size // patch_size."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patch tokens per image (N)."""
        return self.grid_size**2

    @property
    def num_position_prefix_tokens(self) -> int:
        """Tokens before the patches that have a row in the position table: CLS and distillation token."""
        return int(self.class_token) + int(self.distillation_token)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: CLS, distillation and register tokens."""
        return self.num_position_prefix_tokens + self.num_register_tokens

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> EncoderConfig:
        """Build from an HF `config.json` dict (the model_types in `HF_VISION_MODEL_TYPES`)."""
        model_type = hf_config.get("model_type")
        if model_type not in HF_VISION_MODEL_TYPES:
            raise ValueError(f"unsupported model_type {model_type!r}; supported: {sorted(HF_VISION_MODEL_TYPES)}")
        arch = HF_VISION_MODEL_TYPES[model_type]
        vision = hf_config["vision_config"] if model_type in COMPOSITE_MODEL_TYPES else hf_config
        hf = _hf_config_object(HF_VISION_CONFIG_TYPES[arch], vision or {}).to_dict()
        family = {k: v for k, v in ARCH_DEFAULTS[arch].items() if k != "default_pooling"}
        return cls(arch=arch, **family | _fields_from_hf(arch, hf))

    def to_hf_vision_dict(self, arch: str | None = None) -> dict[str, Any]:
        """The fields of the HF vision config (ViTConfig, SiglipVisionConfig, Dinov2Config, ... keyword
        arguments) that describe this encoder; `arch` names another family with the same layout."""
        arch = arch or self.arch
        hf_fields = _hf_config_object(HF_VISION_CONFIG_TYPES[arch], {}).to_dict()
        renames = HF_FIELD_RENAMES.get(arch, {})
        values = {renames.get(name, name): value for name, value in dataclasses.asdict(self).items()
                  if name not in NOT_FROM_HF}
        values = {name: value for name, value in values.items() if name in hf_fields}
        if "mlp_ratio" in hf_fields:
            values["mlp_ratio"] = _dinov2_mlp_ratio(self.hidden_size, self.intermediate_size, self.use_swiglu_ffn)
        return values


def _hf_config_object(model_type: str, fields: dict[str, Any]) -> transformers.PreTrainedConfig:
    """Let the transformers config class fill in the defaults that a `config.json` may omit."""
    fields = {k: v for k, v in fields.items() if k != "model_type"}
    return transformers.CONFIG_MAPPING[model_type](**fields)


def _fields_from_hf(arch: str, hf: dict[str, Any]) -> dict[str, Any]:
    """Our fields that an HF vision config dict holds (under the family's names)."""
    names = {f.name for f in dataclasses.fields(EncoderConfig)} - {"arch", *NOT_FROM_HF}
    renames = HF_FIELD_RENAMES.get(arch, {})
    fields = {name: hf[renames.get(name, name)] for name in names if renames.get(name, name) in hf}
    if "mlp_ratio" in hf:  # DINOv2 gives the MLP width as a ratio
        fields["intermediate_size"] = _dinov2_mlp_width(hf["hidden_size"], hf["mlp_ratio"], hf["use_swiglu_ffn"])
    return fields


def _dinov2_mlp_width(hidden_size: int, mlp_ratio: float, swiglu: bool) -> int:
    """DINOv2's MLP hidden width: hidden_size * mlp_ratio; SwiGLU keeps 2/3 of it, rounded up to a multiple of 8."""
    width = int(hidden_size * mlp_ratio)
    return (int(width * 2 / 3) + 7) // 8 * 8 if swiglu else width


def _dinov2_mlp_ratio(hidden_size: int, intermediate_size: int, swiglu: bool) -> int:
    """The (integer, as Dinov2Config requires) `mlp_ratio` that gives `intermediate_size` back."""
    for ratio in range(1, 65):
        if _dinov2_mlp_width(hidden_size, ratio, swiglu) == intermediate_size:
            return ratio
    raise ValueError(f"no DINOv2 mlp_ratio gives intermediate_size {intermediate_size} at hidden_size {hidden_size}")


def check_values(values: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first EncoderConfig field out of range: counts and sizes (the int
    fields) must be positive (register tokens may be 0), dropout shares in [0, 1)."""
    for name, value in values.items():
        if name in PROBABILITIES and not 0.0 <= value < 1.0:
            raise ValueError(f"{name}: must be in [0, 1), got {value}")
        if type(value) is int and value < (0 if name in COUNTS_FROM_ZERO else 1):
            raise ValueError(f"{name}: must be {'>= 0' if name in COUNTS_FROM_ZERO else 'positive'}, got {value}")


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
    them back. `label2id` is derived from `id2label`.
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pooling: Pooling = "cls"
    num_labels: int = 2
    id2label: dict[int, str] = field(default_factory=dict)  # empty: LABEL_0, LABEL_1, ...
    label2id: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.id2label = dict(self.id2label) or default_labels(self.num_labels)
        if sorted(self.id2label) != list(range(self.num_labels)):
            raise ValueError(f"id2label keys must be the ints 0..{self.num_labels - 1}, got {list(self.id2label)}")
        check_pooling(self.pooling, self.encoder)
        self.label2id = {name: index for index, name in self.id2label.items()}

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> ClassifierConfig:
        """Build from an HF `config.json` dict; pooling is what the checkpoint's HF class computes (DeiT:
        `cls` for `DeiTForImageClassification`, else `cls_distill`), or the family default."""
        encoder = EncoderConfig.from_hf_config(hf_config)
        id2label = labels_from_json(hf_config.get("id2label", {})) or default_labels(2)
        pooling = ARCH_DEFAULTS[encoder.arch]["default_pooling"]
        if hf_config.get("architectures") == ["DeiTForImageClassification"]:
            pooling = "cls"
        return cls(encoder=encoder, pooling=pooling, num_labels=len(id2label), id2label=id2label)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data, for JSON (which writes the `id2label` keys as strings)."""
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        """`to_dict` as indented JSON, as `PretrainedConfig.to_json_string` gives it (the Trainer's experiment
        trackers log the model config through `to_dict` / `to_json_string`)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ClassifierConfig:
        """Inverse of `to_dict`, also after a JSON round trip."""
        fields = {k: v for k, v in fields.items() if k != "label2id"}
        encoder = EncoderConfig(**fields.pop("encoder"))
        return cls(encoder=encoder, **fields | {"id2label": labels_from_json(fields.get("id2label", {}))})

    def with_labels(self, id2label: dict[int, str]) -> ClassifierConfig:
        """A copy with another label set."""
        return dataclasses.replace(self, num_labels=len(id2label), id2label=id2label)


def check_pooling(pooling: str, encoder: EncoderConfig) -> None:
    """Raise ValueError when `encoder` lacks the token that `pooling` reads (CLS, distillation token)."""
    if pooling not in typing.get_args(Pooling):
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {list(typing.get_args(Pooling))}")
    if pooling.startswith("cls") and not encoder.class_token:
        raise ValueError(f"pooling {pooling!r} needs a CLS token; {encoder.arch} has none (use 'mean' or 'map')")
    if pooling == "cls_distill" and not encoder.distillation_token:
        raise ValueError(f"pooling 'cls_distill' needs a distillation token; {encoder.arch} has none")


def labels_from_json(id2label: Mapping[str | int, str]) -> dict[int, str]:
    """`id2label` as read from JSON (string keys) -> int keys: the one place that converts them."""
    return {int(index): name for index, name in id2label.items()}


def default_labels(num_labels: int) -> dict[int, str]:
    """HF-style placeholder names `LABEL_0`, `LABEL_1`, ..."""
    return {i: f"LABEL_{i}" for i in range(num_labels)}
