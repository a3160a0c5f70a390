"""The sizes a model folder's config.json declares, checked against its weights before anything is built.

A config.json is a few hundred bytes that decide how much memory and time loading takes: ten million
layers, a 100 000-px image size or a huge hidden size would make the loader expand per-layer key names
and allocate the model before any check could notice. The weights file is the evidence: a strict load
needs every encoder parameter from it, so the encoder the config describes can hold no more elements
than the file does. That count comes from two tiny models built on the meta device (no memory):
one layer and two layers, scaled to the declared depth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch

from .config import ClassifierConfig, EncoderConfig
from .convert import CheckpointError
from .model import VisionEncoder

SIZE_FIELDS = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "intermediate_size")


def check_config_fits_weights(config: ClassifierConfig, state: Mapping[str, torch.Tensor], config_path: Path,
                              weights_file: Path) -> None:
    """Refuse a config whose encoder needs over twice the parameters `state` (the weights file's tensors) holds,
    or cannot be built at all (sizes of the wrong type). Smaller gaps (a tensor missing, a layer more) are left to
    the strict load, which names each tensor."""
    sizes = ", ".join(f"{name}={getattr(config.encoder, name)!r}" for name in SIZE_FIELDS)
    try:
        needed = encoder_parameter_count(config.encoder)
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{config_path}: cannot build the encoder it declares ({sizes}): {err}") from None
    held = sum(tensor.numel() for tensor in state.values())
    if needed > 2 * held:
        raise CheckpointError(f"{config_path}: declares an encoder of {needed:,} parameters ({sizes}) but "
                              f"{weights_file.name} holds {held:,} values in all: the config was altered or "
                              "belongs to another model")


def encoder_parameter_count(encoder: EncoderConfig) -> int:
    """Parameters of the encoder `encoder` describes, counted without allocating any."""
    one, two = (_meta_parameter_count(dataclasses.replace(encoder, num_hidden_layers=n)) for n in (1, 2))
    return one + (encoder.num_hidden_layers - 1) * (two - one)


def _meta_parameter_count(encoder: EncoderConfig) -> int:
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in VisionEncoder(encoder).parameters())
