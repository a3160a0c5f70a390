"""One loader for inference: a model folder or hub id -> the scratch model, its preprocessing, its run config.

    loaded = load_for_inference("runs/cifar10")            # or runs/cifar10/checkpoint-500, or an HF folder / hub id
    logits = forward_logits(loaded.model, preprocess_images(images, loaded.preprocess), resolve_precision("auto"))

Accepted folders: a training output (`save_classifier` + `preprocessor_config.json` + `run_config.yaml`),
any `checkpoint-N` inside one (its run config is read from the parent), an HF-native folder of a
supported family (`ViTForImageClassification`, `Dinov2ForImageClassification`, ...), or a project-format folder
(`"format": "vit_finetune"` in `config.json`). Weights are read by `modeling.hub` (safetensors; pickles
only with `weights_only=True`). Evaluation and prediction both start here; this module imports neither
`datasets` nor the Trainer, so prediction starts fast.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from vit_finetune.data.config import looks_local
from vit_finetune.data.preprocess import PROCESSOR_FILE, PreprocessConfig, read_preprocess
from vit_finetune.modeling.convert import CheckpointError
from vit_finetune.modeling.hub import load_classifier, resolve_model_dir
from vit_finetune.modeling.model import ImageClassifier
from vit_finetune.precision import autocast_dtype
from vit_finetune.run_files import read_resolved_config
from vit_finetune.typed import error_reason

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A classifier ready for inference (eval mode, on the CPU) and what travels with it."""

    model: ImageClassifier
    preprocess: PreprocessConfig
    run_config: dict[str, Any] | None  # the run_config.yaml tree saved with the model (None: not ours / not recorded)
    model_dir: Path

    @property
    def label_names(self) -> list[str]:
        """Class names in label-id order."""
        id2label = self.model.config.id2label
        return [id2label[index] for index in range(len(id2label))]


def load_for_inference(name_or_dir: str | Path) -> LoadedModel:
    """Load the model, preprocessing settings and (if recorded) run config of a folder or hub id."""
    model_dir = find_model_dir(name_or_dir)
    processor = read_preprocess(model_dir) if (model_dir / PROCESSOR_FILE).is_file() else None
    # at the processor's input size: DINOv2 checkpoints store positions for 518 px and crop 224
    model = load_classifier(model_dir, image_size=processor.square_output_size() if processor else None)
    return LoadedModel(model=model, preprocess=checked_preprocess(model_dir, processor, model),
                       run_config=read_resolved_config(model_dir), model_dir=model_dir)


def find_model_dir(name_or_dir: str | Path) -> Path:
    """A local folder as it is, or a hub id's snapshot; a `CheckpointError` naming it when neither works."""
    if looks_local(str(name_or_dir)) and not Path(name_or_dir).expanduser().is_dir():
        raise CheckpointError(f"{name_or_dir}: no such model folder")
    try:
        return resolve_model_dir(name_or_dir)
    except (OSError, ValueError) as err:  # hub errors: HTTP / offline (OSError), bad repo id (ValueError)
        message = f"{name_or_dir}: not a model folder, and loading it as a hub id failed ({error_reason(err)})"
        raise CheckpointError(message) from None


def checked_preprocess(model_dir: Path, processor: PreprocessConfig | None, model: ImageClassifier) -> PreprocessConfig:
    """The folder's processor, whose output size must be the model's; without one, the defaults at the model's
    resolution."""
    size = model.config.encoder.image_size
    if processor is None:
        logger.warning("%s has no %s: resizing to %dx%d with mean = std = 0.5", model_dir, PROCESSOR_FILE, size, size)
        return PreprocessConfig(height=size, width=size)
    output = processor.fixed_output_size
    if output is not None and output != (size, size):
        raise CheckpointError(f"{model_dir / PROCESSOR_FILE}: gives {output[0]}x{output[1]} px inputs, but the model "
                              f"takes {size}x{size} px (config.json image_size)")
    return processor


@contextlib.contextmanager
def inference_mode(device: torch.device, precision: str) -> Iterator[None]:
    """No gradients, and autocast to bf16 / fp16 when `precision` (already resolved) asks for it."""
    dtype = autocast_dtype(precision)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        yield


def forward_logits(model: ImageClassifier, pixel_values: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """float32 logits (B, num_labels), computed (and left) on the model's device; `precision` is resolved
    (see `precision.resolve_precision`)."""
    device = next(model.parameters()).device
    with inference_mode(device, precision):
        return model(pixel_values.to(device)).logits.float()
