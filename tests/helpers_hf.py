"""Tiny local Hugging Face checkpoints for tests (randomly initialised, written with `save_pretrained`).

Each helper writes `config.json`, `model.safetensors` and (optionally) `preprocessor_config.json`
into `directory`, exactly as a hub snapshot would look, and returns the folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers


def _labels(num_labels: int, id2label: dict[int, str] | None) -> dict:
    id2label = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
    return dict(id2label=id2label, label2id={v: k for k, v in id2label.items()})


def make_hf_vit_checkpoint(
    directory: str | Path,
    num_labels: int | None = 3,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 64,
    with_processor: bool = True,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
) -> Path:
    """A `ViTForImageClassification` checkpoint, or a `ViTModel` (with pooler, like in21k) if `num_labels` is None."""
    directory = Path(directory)
    config = transformers.ViTConfig(
        image_size=image_size, patch_size=patch_size, hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate,
        **(_labels(num_labels, id2label) if num_labels else {}),
    )
    torch.manual_seed(seed)
    model = transformers.ViTForImageClassification(config) if num_labels else transformers.ViTModel(config)
    model.save_pretrained(directory)
    if with_processor:
        processor = transformers.ViTImageProcessorPil(
            size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
        processor.save_pretrained(directory)
    return directory


def make_hf_siglip_checkpoint(
    directory: str | Path,
    num_labels: int | None = 3,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 64,
    with_processor: bool = True,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
    vision_use_head: bool = True,
    with_text_tower: bool = False,
) -> Path:
    """A `SiglipForImageClassification` checkpoint; with `num_labels=None` a `SiglipVisionModel`,
    or a full `SiglipModel` (tiny text tower included) if `with_text_tower`."""
    directory = Path(directory)
    vision = dict(
        image_size=image_size, patch_size=patch_size, hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate, vision_use_head=vision_use_head,
    )
    torch.manual_seed(seed)
    if num_labels:
        config = transformers.SiglipConfig(vision_config=vision, **_labels(num_labels, id2label))
        model = transformers.SiglipForImageClassification(config)
    elif with_text_tower:
        text = dict(
            vocab_size=64, hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=heads,
            intermediate_size=intermediate, max_position_embeddings=16, bos_token_id=None, eos_token_id=None,
            pad_token_id=1,
        )
        model = transformers.SiglipModel(transformers.SiglipConfig(vision_config=vision, text_config=text))
    else:
        model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision))
    model.save_pretrained(directory)
    if with_processor:
        processor = transformers.SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
        processor.save_pretrained(directory)
    return directory


# ---- the other supported families: one generic helper ---------------------------------------------

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _family_config(family: str, vision: dict, labels: dict) -> transformers.PreTrainedConfig:
    """The HF config of `family` with the vision fields `vision` (ViT names) and `labels`."""
    vision = dict(vision)
    if family.startswith("dinov2"):
        vision["mlp_ratio"] = vision.pop("intermediate_size") // vision["hidden_size"]
    if family == "clip":  # with a one-layer text tower (CLIPModel holds one; the classifier ignores it)
        text = dict(vocab_size=64, hidden_size=vision["hidden_size"], num_hidden_layers=1,
                    num_attention_heads=vision["num_attention_heads"], intermediate_size=vision["intermediate_size"],
                    max_position_embeddings=16, bos_token_id=0, eos_token_id=2, pad_token_id=1)
        return transformers.CLIPConfig(vision_config=vision, text_config=text, projection_dim=16, **labels)
    if family == "clip_vision_model":
        return transformers.CLIPVisionConfig(**vision)
    if family == "vit_mae":
        vision["mask_ratio"] = 0.0  # the encoder sees every patch, in order (see `mae_noise`)
    return transformers.CONFIG_MAPPING[family](**vision, **labels)


def _family_processor(family: str, image_size: int):
    """The image processor each family's hub checkpoints use, at `image_size`."""
    square, crop = {"height": image_size, "width": image_size}, {"height": image_size, "width": image_size}
    if family.startswith("dinov2"):
        return transformers.BitImageProcessorPil(size={"shortest_edge": image_size}, crop_size=crop,
                                                 image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    if family.startswith("clip"):
        return transformers.CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size=crop)
    if family == "deit":
        return transformers.DeiTImageProcessorPil(size=square, crop_size=crop, image_mean=IMAGENET_MEAN,
                                                  image_std=IMAGENET_STD)
    return transformers.ViTImageProcessorPil(size=square, resample=3, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)


def make_hf_family_model(
    family: str,
    hf_class: str,
    num_labels: int | None = 3,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 64,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
    **family_fields,
) -> transformers.PreTrainedModel:
    """A randomly initialised `hf_class` model of `family` (an HF model_type: deit, dinov2,
    dinov2_with_registers, clip, clip_vision_model, vit_mae), in eval mode; `family_fields` go to the
    vision config (e.g. `use_swiglu_ffn=True`, `num_register_tokens=2`)."""
    vision = dict(image_size=image_size, patch_size=patch_size, hidden_size=hidden_size, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=intermediate, **family_fields)
    config = _family_config(family, vision, _labels(num_labels, id2label) if num_labels else {})
    torch.manual_seed(seed)
    model = getattr(transformers, hf_class)(config).eval()
    with torch.no_grad():  # off HF's constant inits (LayerNorm 1 / 0, LayerScale 1, zero registers): a mix-up shows
        for name, param in model.named_parameters():
            if any(part in name for part in ("norm", "layer_scale", "register_tokens", "class_embedding")):
                param.add_(torch.randn_like(param) * 0.1)
    if family == "vit_mae":
        mae_sin_cos_positions(model.base_model.embeddings)
    return model


def mae_sin_cos_positions(embeddings: torch.nn.Module) -> torch.Tensor:
    """Fill a `ViTMAEEmbeddings` position table with its 2-D sin-cos values, as the hub checkpoints hold
    them (transformers 5.24 leaves it zero on a random init: `initialize_weights` returns early once
    the patch projection is marked initialised). Returns the table."""
    embeddings.patch_embeddings.projection._is_hf_initialized = False
    with torch.no_grad():
        embeddings.initialize_weights()
    return embeddings.position_embeddings


def make_hf_family_checkpoint(directory: str | Path, family: str, hf_class: str, with_processor: bool = True,
                              **kwargs) -> Path:
    """`make_hf_family_model(family, hf_class, **kwargs)` saved with `save_pretrained` (and the family's
    image processor at the model's size)."""
    directory = Path(directory)
    model = make_hf_family_model(family, hf_class, **kwargs)
    model.save_pretrained(directory)
    if with_processor:
        vision_config = model.config.vision_config if family == "clip" else model.config
        _family_processor(family, vision_config.image_size).save_pretrained(directory)
    return directory


def mae_noise(batch: int, num_patches: int) -> torch.Tensor:
    """ViTMAE's shuffle noise that keeps the patches in order (with mask_ratio 0 none is dropped)."""
    return torch.arange(num_patches, dtype=torch.float32).expand(batch, num_patches)
