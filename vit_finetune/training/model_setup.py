"""The model a run starts from (a pretrained checkpoint or a random init) and its preprocessing."""

from __future__ import annotations

import logging

import torch
from transformers import TrainingArguments

from vit_finetune.config import ModelSection
from vit_finetune.data.preprocess import PROCESSOR_FILE, PreprocessConfig, read_preprocess
from vit_finetune.modeling import ClassifierConfig, EncoderConfig, ImageClassifier, build_classifier, load_classifier
from vit_finetune.modeling import resolve_model_dir
from vit_finetune.modeling.config import ARCH_DEFAULTS, AttnImplementation, ProblemType
from vit_finetune.modeling.layers import set_attn_implementation
from vit_finetune.precision import autocast_dtype, precision_of_trainer_flags
from vit_finetune.training.attention_probe import probe_attn_implementation

logger = logging.getLogger(__name__)


def build_preprocess(section: ModelSection) -> PreprocessConfig:
    """Preprocessing settings: the checkpoint's image processor, else the config's (random init)."""
    image_size = section.encoder.get("image_size")
    if section.checkpoint is None:
        return _section_preprocess(section, section.random_init_encoder().image_size)
    model_dir = resolve_model_dir(section.checkpoint)
    if not (model_dir / PROCESSOR_FILE).is_file():
        logger.warning("%s has no %s: using model.image_mean/image_std", section.checkpoint, PROCESSOR_FILE)
        return _section_preprocess(section, image_size or EncoderConfig().image_size)
    preprocess = read_preprocess(model_dir)
    return preprocess if image_size is None else preprocess.at_resolution(image_size)


def build_model(section: ModelSection, id2label: dict[int, str],
                preprocess: PreprocessConfig | None = None,
                problem_type: ProblemType | None = None) -> ImageClassifier:
    """The classifier for `id2label`: pretrained encoder (new head if the labels differ) or random init.

    A checkpoint is loaded at the resolution its preprocessing (`preprocess`, default `build_preprocess`)
    gives the input (DINOv2 stores positions for 518 px, its processor crops 224), with the dropout
    and stochastic-depth rates the run sets, and HF's `problem_type` (None: single-label) for the head's loss.
    """
    if section.checkpoint is not None:
        image_size = section.encoder.get("image_size") or (preprocess or build_preprocess(section)).square_output_size()
        overrides = {name: value for name, value in section.encoder.items() if name != "image_size"}
        model = load_classifier(section.checkpoint, id2label=id2label, pooling=section.pooling,
                                image_size=image_size, encoder_overrides=overrides)
        model.config.problem_type = problem_type  # the head's loss, whatever the checkpoint was trained with
        return model
    pooling = section.pooling or ARCH_DEFAULTS[section.arch]["default_pooling"]
    config = ClassifierConfig(encoder=section.random_init_encoder(), pooling=pooling,
                              num_labels=len(id2label), id2label=id2label, problem_type=problem_type)
    return build_classifier(config)


def choose_attn_implementation(model: ImageClassifier, section: ModelSection,
                               args: TrainingArguments) -> AttnImplementation:
    """Set `model.attn_implementation` on every attention module; `auto` times both first (logged).

    The probe runs at the run's per-device batch, tokens per image while training, device and
    autocast dtype (see `training.attention_probe`).
    """
    choice = section.attn_implementation
    if choice == "auto":
        backbone = model.backbone
        result = probe_attn_implementation(backbone.config, args.per_device_train_batch_size,
                                           backbone.num_training_tokens(), args.device,
                                           autocast_dtype(precision_of_trainer_flags(args.bf16, args.fp16)))
        logger.info("attention for training: %s", result.describe())
        choice = agreed_across_processes(result.choice)
    set_attn_implementation(model, choice)
    return choice


def agreed_across_processes(choice: AttnImplementation) -> AttnImplementation:
    """The first process's choice in a multi-process run, so that every rank computes the same way.

    Each process times its own probe, and near-ties can fall differently on different ranks.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return choice
    chosen = [choice]
    torch.distributed.broadcast_object_list(chosen, src=0)
    return chosen[0]


def _section_preprocess(section: ModelSection, image_size: int) -> PreprocessConfig:
    return PreprocessConfig(height=image_size, width=image_size,
                            image_mean=section.image_mean, image_std=section.image_std)
