"""LoRA with the peft library on our encoder: adapters on the encoder layers' Linear modules, the head in full.

Targets. `finetune.lora.target_modules` names modules inside an encoder layer (timm's names): `qkv` (the
fused q/k/v projection, D -> 3D), `proj` (attention output), `fc1`, `fc2` (MLP). peft gets them as one
regular expression over full module names, so that `proj` never matches the patch embedding's Conv2d nor
`fc1` the attention-pooling head's MLP. LoRA on the fused `qkv` adds `B A` with A (r, D) and B (3D, r):
split by rows, q, k and v each get `B_q A`, `B_k A`, `B_v A`, i.e. LoRA of rank r on each projection with
the down-projection A shared (4 D r parameters per layer instead of 6 D r for three separate adapters;
rank 3r on the fused matrix holds any three separate rank-r adapters).

Head. The modules outside the backbone (classifier, attention pooling) train in full, as peft's
`modules_to_save`, so the adapter folder alone turns the base model into the trained one.

Files. peft writes `adapter_model.safetensors` and `adapter_config.json` (`save_pretrained`) into
`adapter/` of a checkpoint or the final folder; next to it, `model.safetensors` holds the merged model in
the plain HF-native format (eval, predict and `transformers.pipeline` need no peft). Resume rebuilds the
frozen base exactly as the run built it (same checkpoint or seeded init), loads the adapter strictly and
checks that base + adapter merge to the checkpoint's merged weights, so a different base is refused.
peft is imported only when a run uses LoRA.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from vit_finetune.finetune_config import LoraSettings
from vit_finetune.modeling.hub import load_classifier, save_classifier
from vit_finetune.modeling.model import ImageClassifier
from vit_finetune.training.checkpoints import ResumeError

ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
ADAPTER_FILES = (f"{ADAPTER_DIR}/{ADAPTER_WEIGHTS}", f"{ADAPTER_DIR}/{ADAPTER_CONFIG}")
MERGE_TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # base + adapter against a checkpoint's merged weights


def target_pattern(target_modules: tuple[str, ...]) -> str:
    """peft's `target_modules` as a regular expression matching only the encoder layers' modules."""
    attention = [name for name in target_modules if name in ("qkv", "proj")]
    mlp = [name for name in target_modules if name in ("fc1", "fc2")]
    parts = [rf"{block}\.({'|'.join(names)})" for block, names in (("attn", attention), ("mlp", mlp)) if names]
    return rf"backbone\.encoder\.layers\.\d+\.({'|'.join(parts)})"


def head_modules(model: ImageClassifier) -> list[str]:
    """The modules outside the backbone that hold parameters (classifier, attention pooling)."""
    return [name for name, child in model.named_children()
            if name != "backbone" and any(True for _ in child.parameters())]


def add_lora(model: ImageClassifier, settings: LoraSettings) -> nn.Module:
    """`model` wrapped by peft: LoRA adapters on the targets, the head trained in full, the rest frozen."""
    import peft

    config = peft.LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                             target_modules=target_pattern(settings.target_modules),
                             modules_to_save=head_modules(model))
    return peft.get_peft_model(model, config)


def merged_copy(model: nn.Module) -> ImageClassifier:
    """A plain `ImageClassifier` with the adapters merged into the weights (the training model is untouched)."""
    return copy.deepcopy(model).merge_and_unload()


def save_lora_model(model: nn.Module, folder: Path) -> None:
    """The merged model (HF-native `model.safetensors`) and the adapter as peft writes it (`adapter/`)."""
    model.save_pretrained(str(folder / ADAPTER_DIR))
    save_classifier(merged_copy(model), folder)


def load_lora_weights(model: nn.Module, folder: Path) -> None:
    """Load `folder`'s adapter into `model` strictly, then check base + adapter against the merged weights."""
    import peft

    path = folder / ADAPTER_DIR / ADAPTER_WEIGHTS
    saved = _read_adapter(path)
    expected = {key: value.shape for key, value in peft.get_peft_model_state_dict(model).items()}
    if {key: value.shape for key, value in saved.items()} != expected:
        missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
        raise ResumeError(f"{path}: the adapter does not match the model's LoRA and head parameters (missing "
                          f"{missing}, unexpected {unexpected}, or other shapes)")
    peft.set_peft_model_state_dict(model, saved)
    _check_merged_weights(model, folder)


def _read_adapter(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ResumeError(f"{path}: cannot read the adapter: {err}") from err


def _check_merged_weights(model: nn.Module, folder: Path) -> None:
    """Base + adapter must give the checkpoint's merged weights: the base is the one it was trained on."""
    merged, saved = merged_copy(model).state_dict(), load_classifier(folder).state_dict()
    differ = [key for key in saved if not torch.allclose(merged[key], saved[key], **MERGE_TOLERANCE)]
    if differ:
        raise ResumeError(f"{folder}: the base model with this adapter does not give the checkpoint's merged "
                          f"weights ({', '.join(differ[:3])}, ...): the run's model.checkpoint is not the base this "
                          "adapter was trained on")
