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
