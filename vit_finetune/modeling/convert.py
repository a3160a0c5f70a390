"""Pure, table-driven state-dict conversion between HF checkpoints and our modules.

The tables map the key names that are *in the files* (hub checkpoints and transformers 5.x
`save_pretrained` both write the classic names, e.g. `vit.encoder.layer.0.attention.attention.query.weight`)
to ours. `{i}` is a layer index, `{p}` is `weight` and `bias`. A tuple of HF names is concatenated
along dim 0 into one of our tensors (HF's separate q, k, v -> our fused `qkv`) and split back. A third
element names a `Reshape` between the file's layout and ours (SigLIP's and CLIP's (N, D) position
table -> our (1, N, D) `pos_embed`); it is applied after concatenating and undone before splitting.

Our keys fall in three groups: `backbone.*` (always required), `pool.*` (SigLIP MAP head) and
`classifier.*` (with DeiT's `distillation_classifier.*`); an optional group is converted
all-or-nothing. Rows whose tensor our model for this config does not have (a CLIP patch bias, DINOv2
registers, a SwiGLU MLP) are skipped. Every other tensor in a file must match an explicitly dropped
pattern, or conversion fails with a `CheckpointError` listing the keys; tensors an HF class has and we
do not use are written back with HF's initial value (`EXPORT_FILLERS`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from .config import ClassifierConfig
from .layers import AttentionPoolingHead
from .model import ImageClassifier, param_group

logger = logging.getLogger(__name__)

HFNames = str | tuple[str, ...]


@dataclass(frozen=True)
class Reshape:
    """A layout change between the tensor in the file and ours: `to_hf` undoes `to_ours`."""

    to_ours: Callable[[torch.Tensor], torch.Tensor]
    to_hf: Callable[[torch.Tensor], torch.Tensor]


SAME_LAYOUT = Reshape(to_ours=lambda t: t, to_hf=lambda t: t)
ADD_BATCH_DIM = Reshape(to_ours=lambda t: t.unsqueeze(0), to_hf=lambda t: t.squeeze(0))  # (N, D) <-> (1, N, D)
ONE_TOKEN = Reshape(to_ours=lambda t: t.reshape(1, 1, -1), to_hf=lambda t: t.reshape(-1))  # (D,) <-> (1, 1, D)

Row = tuple[HFNames, str] | tuple[HFNames, str, Reshape]


def qkv_row(prefix: str, q: str, k: str, v: str) -> Row:
    """HF's separate q, k, v projections (under `prefix`) -> our fused `qkv`."""
    return tuple(f"{prefix}.{name}.{{p}}" for name in (q, k, v)), "encoder.layers.{i}.attn.qkv.{p}"


# (hf name under the vision prefix, our name under `backbone.`[, reshape])
VIT_ATTENTION: list[Row] = [
    qkv_row("encoder.layer.{i}.attention.attention", "query", "key", "value"),
    ("encoder.layer.{i}.attention.output.dense.{p}", "encoder.layers.{i}.attn.proj.{p}"),
]
VIT_ENCODER_TABLE: list[Row] = [  # ViT, and ViT-MAE (the same names)
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}"),
    ("encoder.layer.{i}.layernorm_before.{p}", "encoder.layers.{i}.norm1.{p}"),
    *VIT_ATTENTION,
    ("encoder.layer.{i}.layernorm_after.{p}", "encoder.layers.{i}.norm2.{p}"),
    ("encoder.layer.{i}.intermediate.dense.{p}", "encoder.layers.{i}.mlp.fc1.{p}"),
    ("encoder.layer.{i}.output.dense.{p}", "encoder.layers.{i}.mlp.fc2.{p}"),
    ("layernorm.{p}", "norm.{p}"),
]
DEIT_ENCODER_TABLE: list[Row] = [*VIT_ENCODER_TABLE, ("embeddings.distillation_token", "dist_token")]

DINOV2_ENCODER_TABLE: list[Row] = [  # with and without registers; plain or SwiGLU MLP
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.{p}", "patch_embed.proj.{p}"),
    ("embeddings.register_tokens", "reg_token"),
    ("encoder.layer.{i}.norm1.{p}", "encoder.layers.{i}.norm1.{p}"),
    *VIT_ATTENTION,
    ("encoder.layer.{i}.layer_scale1.lambda1", "encoder.layers.{i}.ls1.gamma"),
    ("encoder.layer.{i}.norm2.{p}", "encoder.layers.{i}.norm2.{p}"),
    ("encoder.layer.{i}.mlp.fc1.{p}", "encoder.layers.{i}.mlp.fc1.{p}"),
    ("encoder.layer.{i}.mlp.fc2.{p}", "encoder.layers.{i}.mlp.fc2.{p}"),
    ("encoder.layer.{i}.mlp.weights_in.{p}", "encoder.layers.{i}.mlp.w12.{p}"),  # SwiGLU: [gate; value] rows
    ("encoder.layer.{i}.mlp.weights_out.{p}", "encoder.layers.{i}.mlp.w3.{p}"),
    ("encoder.layer.{i}.layer_scale2.lambda1", "encoder.layers.{i}.ls2.gamma"),
    ("layernorm.{p}", "norm.{p}"),
]

SIGLIP_LAYERS: list[Row] = [  # SigLIP and CLIP
    ("encoder.layers.{i}.layer_norm1.{p}", "encoder.layers.{i}.norm1.{p}"),
    qkv_row("encoder.layers.{i}.self_attn", "q_proj", "k_proj", "v_proj"),
    ("encoder.layers.{i}.self_attn.out_proj.{p}", "encoder.layers.{i}.attn.proj.{p}"),
    ("encoder.layers.{i}.layer_norm2.{p}", "encoder.layers.{i}.norm2.{p}"),
    ("encoder.layers.{i}.mlp.fc1.{p}", "encoder.layers.{i}.mlp.fc1.{p}"),
    ("encoder.layers.{i}.mlp.fc2.{p}", "encoder.layers.{i}.mlp.fc2.{p}"),
    ("post_layernorm.{p}", "norm.{p}"),
]
SIGLIP_ENCODER_TABLE: list[Row] = [
    ("embeddings.patch_embedding.{p}", "patch_embed.proj.{p}"),
    ("embeddings.position_embedding.weight", "pos_embed", ADD_BATCH_DIM),  # nn.Embedding (N, D)
    *SIGLIP_LAYERS,
]
CLIP_ENCODER_TABLE: list[Row] = [
    ("embeddings.patch_embedding.{p}", "patch_embed.proj.{p}"),  # no bias in CLIP
    ("embeddings.class_embedding", "cls_token", ONE_TOKEN),  # (D,)
    ("embeddings.position_embedding.weight", "pos_embed", ADD_BATCH_DIM),  # nn.Embedding (1+N, D)
    ("pre_layrnorm.{p}", "pre_norm.{p}"),  # sic: HF's name
    *SIGLIP_LAYERS,
]

# SigLIP attention-pooling ("MAP") head, under the vision prefix -> our `pool.*`.
SIGLIP_MAP_HEAD_TABLE: list[Row] = [
    ("head.probe", "probe"),
    ("head.attention.in_proj_{p}", "in_proj.{p}"),
    ("head.attention.out_proj.{p}", "out_proj.{p}"),
    ("head.layernorm.{p}", "norm.{p}"),
    ("head.mlp.fc1.{p}", "mlp.fc1.{p}"),
    ("head.mlp.fc2.{p}", "mlp.fc2.{p}"),
]

# Classification heads (no prefix) by pooling; DeiTForImageClassificationWithTeacher has two.
CLASSIFIER_TABLE: list[Row] = [("classifier.{p}", "classifier.{p}")]
CLASSIFIER_TABLES = {
    "cls_distill": [("cls_classifier.{p}", "classifier.{p}"),
                    ("distillation_classifier.{p}", "distillation_classifier.{p}")],
}

ENCODER_TABLES = {
    "vit": VIT_ENCODER_TABLE, "siglip": SIGLIP_ENCODER_TABLE, "deit": DEIT_ENCODER_TABLE,
    "dinov2": DINOV2_ENCODER_TABLE, "dinov2_with_registers": DINOV2_ENCODER_TABLE, "clip": CLIP_ENCODER_TABLE,
    "vit_mae": VIT_ENCODER_TABLE,
}
MAP_HEAD_TABLES = {"siglip": SIGLIP_MAP_HEAD_TABLE}

# Where the vision tower sits in each family's files, most specific first.
VISION_PREFIXES = {
    "vit": ("vit.", ""), "siglip": ("vision_model.", ""), "deit": ("deit.", ""), "dinov2": ("dinov2.", ""),
    "dinov2_with_registers": ("dinov2_with_registers.", ""), "clip": ("vision_model.", ""),
    "vit_mae": ("vit.", ""),  # ViTMAEForPreTraining, ViTMAEModel
}

# Tensors that files may hold and we deliberately do not use (full-key regexes).
DROPPED_PATTERNS = {
    "vit": [r"(vit\.)?pooler\.dense\.(weight|bias)"],  # ViTModel's tanh pooler
    "siglip": [r"text_model\..+", r"logit_scale", r"logit_bias"],  # SiglipModel's text tower
    "deit": [r"(deit\.)?pooler\.dense\.(weight|bias)"],  # DeiTModel's tanh pooler
    "dinov2": [r"(dinov2\.)?embeddings\.mask_token"],  # masked-image pre-training only
    "dinov2_with_registers": [r"(dinov2_with_registers\.)?embeddings\.mask_token"],
    "clip": [r"text_model\..+", r"logit_scale", r"(text|visual)_projection\.weight"],  # CLIPModel's other parts
    "vit_mae": [r"decoder\..+"],  # ViTMAEForPreTraining's pixel decoder
}

# Tensors an HF class holds that our model has no use for, written on export with the value HF's own
# init gives them (so that transformers loads the folder without "newly initialised" warnings).
DINOV2_MASK_TOKEN = {"embeddings.mask_token": lambda config: torch.zeros(1, config.encoder.hidden_size)}  # (1, D)
EXPORT_FILLERS: dict[str, dict[str, Callable[[ClassifierConfig], torch.Tensor]]] = {
    "dinov2": DINOV2_MASK_TOKEN, "dinov2_with_registers": DINOV2_MASK_TOKEN,
}

# HF classes we can write: the family whose table they use and the vision prefix of the keys in the file.
HF_CLASSES = {
    "ViTModel": ("vit", ""),
    "ViTForImageClassification": ("vit", "vit."),
    "SiglipVisionModel": ("siglip", ""),
    "SiglipForImageClassification": ("siglip", "vision_model."),
    "DeiTModel": ("deit", ""),
    "DeiTForImageClassification": ("deit", "deit."),
    "DeiTForImageClassificationWithTeacher": ("deit", "deit."),
    "Dinov2Model": ("dinov2", ""),
    "Dinov2ForImageClassification": ("dinov2", "dinov2."),
    "Dinov2WithRegistersModel": ("dinov2_with_registers", ""),
    "Dinov2WithRegistersForImageClassification": ("dinov2_with_registers", "dinov2_with_registers."),
    "CLIPVisionModel": ("clip", ""),
    "CLIPForImageClassification": ("clip", "vision_model."),
    "ViTMAEModel": ("vit_mae", ""),
}


class CheckpointError(ValueError):
    """A checkpoint does not match the model: missing, unexpected or mis-shaped tensors (listed)."""


@dataclass(frozen=True)
class Pair:
    """One conversion step: HF tensor name(s) <-> one of our tensor names, with a layout change."""

    hf: tuple[str, ...]
    ours: str
    reshape: Reshape = SAME_LAYOUT

    @property
    def group(self) -> str:
        """`backbone`, `pool` or `classifier`."""
        return param_group(self.ours)

    def names(self, side: str) -> tuple[str, ...]:
        """The names on one side (`hf` or `ours`)."""
        return self.hf if side == "hf" else (self.ours,)


def conversion_pairs(config: ClassifierConfig, hf_prefix: str) -> list[Pair]:
    """Every conversion step for this config, with the vision tower under `hf_prefix` in the file."""
    arch = config.encoder.arch
    tables = [
        (ENCODER_TABLES[arch], hf_prefix, "backbone."),
        (MAP_HEAD_TABLES.get(arch, []), hf_prefix, "pool."),
        (CLASSIFIER_TABLES.get(config.pooling, CLASSIFIER_TABLE), "", ""),
    ]
    expected = expected_shapes(config)
    pairs = [
        Pair(tuple(hf_pre + h for h in pair.hf), our_pre + pair.ours, pair.reshape)
        for table, hf_pre, our_pre in tables
        for pair in _expand(table, config.encoder.num_hidden_layers)
    ]
    return [pair for pair in pairs if pair.ours in expected]


def _expand(table: list[Row], num_layers: int) -> Iterator[Pair]:
    """Fill in `{i}` (layer index) and `{p}` (weight/bias) in a table."""
    for hf, ours, *reshape in table:
        hf = (hf,) if isinstance(hf, str) else hf
        for i in range(num_layers) if "{i}" in ours else [None]:
            for p in ("weight", "bias") if "{p}" in ours else [None]:
                yield Pair(tuple(h.format(i=i, p=p) for h in hf), ours.format(i=i, p=p), *reshape)


def expected_shapes(config: ClassifierConfig) -> dict[str, torch.Size]:
    """Our tensor shapes for `config`, including the optional MAP head (built on the meta device)."""
    with torch.device("meta"):
        model, map_head = ImageClassifier(config), AttentionPoolingHead(config.encoder)
    shapes = {f"pool.{name}": tensor.shape for name, tensor in map_head.state_dict().items()}
    return shapes | {name: tensor.shape for name, tensor in model.state_dict().items()}


def detect_vision_prefix(state_dict: Mapping[str, torch.Tensor], config: ClassifierConfig) -> str:
    """The prefix under which the file stores the vision tower (`vit.`, `vision_model.` or none)."""
    arch = config.encoder.arch
    anchor = ENCODER_TABLES[arch][0][0]
    anchor = anchor.format(p="weight") if isinstance(anchor, str) else anchor[0]
    for prefix in VISION_PREFIXES[arch]:
        if prefix + anchor in state_dict:
            return prefix
    raise CheckpointError(f"no {arch} vision tower found (looked for {anchor!r}); keys: {_preview(state_dict)}")


def hf_to_ours(state_dict: Mapping[str, torch.Tensor], config: ClassifierConfig) -> dict[str, torch.Tensor]:
    """Convert an HF state dict (as stored in the file) to our key layout, strictly.

    `config` describes the checkpoint. The MAP head and classifier are converted when the file has
    them. Raises `CheckpointError` naming missing, unexpected or mis-shaped HF tensors.
    """
    pairs = _select(conversion_pairs(config, detect_vision_prefix(state_dict, config)), state_dict, "hf")
    used = {name for pair in pairs for name in pair.hf}
    dropped = [k for k in state_dict if k not in used and _is_dropped(k, config.encoder.arch)]
    unexpected = [k for k in state_dict if k not in used and k not in dropped]
    if unexpected:
        raise CheckpointError(f"unexpected tensors in checkpoint: {_preview(unexpected)}")
    _check_shapes(pairs, state_dict, expected_shapes(config))
    if dropped:
        logger.info("dropped %d unused checkpoint tensors: %s", len(dropped), _preview(dropped))
    return {pair.ours: pair.reshape.to_ours(_merge([state_dict[name] for name in pair.hf])) for pair in pairs}


def ours_to_hf(
    state_dict: Mapping[str, torch.Tensor], config: ClassifierConfig, hf_class: str
) -> dict[str, torch.Tensor]:
    """Convert our state dict to the key layout that HF `hf_class` writes to its files.

    `hf_class` is one of `HF_CLASSES`. Raises `CheckpointError` if a tensor has no HF counterpart.
    """
    arch, prefix = HF_CLASSES[hf_class]
    if ENCODER_TABLES[arch] is not ENCODER_TABLES[config.encoder.arch]:
        raise ValueError(f"{hf_class} is a {arch} class but the model is {config.encoder.arch}")
    pairs = conversion_pairs(config, prefix)
    if "ForImageClassification" not in hf_class:
        pairs = [pair for pair in pairs if pair.group != "classifier"]
    pairs = _select(pairs, state_dict, "ours")
    unexpected = sorted(set(state_dict) - {pair.ours for pair in pairs})
    if unexpected:
        raise CheckpointError(f"tensors with no {hf_class} counterpart: {_preview(unexpected)}")
    fillers = {prefix + name: make(config) for name, make in EXPORT_FILLERS.get(arch, {}).items()}
    return fillers | {
        name: part
        for pair in pairs
        for name, part in zip(pair.hf, _split(pair.reshape.to_hf(state_dict[pair.ours]), len(pair.hf)), strict=True)
    }


def _select(pairs: list[Pair], keys: Mapping[str, torch.Tensor], side: str) -> list[Pair]:
    """Keep the backbone and every optional group that `keys` has; all of a kept group must be there."""
    present = {"backbone"} | {p.group for p in pairs if any(n in keys for n in p.names(side))}
    pairs = [pair for pair in pairs if pair.group in present]
    missing = [name for pair in pairs for name in pair.names(side) if name not in keys]
    if missing:
        raise CheckpointError(f"missing tensors in checkpoint: {_preview(missing)}")
    return pairs


def _check_shapes(pairs: list[Pair], state_dict: Mapping[str, torch.Tensor], expected: dict[str, torch.Size]) -> None:
    """Each HF part must have the shape that `ours_to_hf` gives it from our expected shape."""
    wrong = []
    for pair in pairs:
        our_layout = torch.empty(expected[pair.ours], device="meta")
        part_shapes = [tuple(part.shape) for part in _split(pair.reshape.to_hf(our_layout), len(pair.hf))]
        wrong += [
            f"{name}: {tuple(state_dict[name].shape)} != expected {shape}"
            for name, shape in zip(pair.hf, part_shapes, strict=True)
            if tuple(state_dict[name].shape) != shape
        ]
    if wrong:
        raise CheckpointError(f"mis-shaped tensors in checkpoint: {_preview(wrong)}")


def _is_dropped(key: str, arch: str) -> bool:
    return any(re.fullmatch(pattern, key) for pattern in DROPPED_PATTERNS[arch])


def _merge(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def _split(tensor: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    # clone: safetensors refuses tensors that share storage
    return (tensor,) if n == 1 else tuple(part.clone() for part in tensor.chunk(n, dim=0))


def _preview(names: Iterator[str] | list[str] | Mapping[str, object], limit: int = 30) -> str:
    names = list(names)
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
