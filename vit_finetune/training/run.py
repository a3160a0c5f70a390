"""One training run: data, model, Trainer, test evaluation, and the artefacts in the output folder."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import TrainOutput

from vit_finetune import run_files
from vit_finetune.config import RunConfig
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.errors import DataError
from vit_finetune.data.sources import ImageSplits, apply_train_augmentation, load_splits
from vit_finetune.precision import compute_device, resolve_precision, trainer_precision_flags
from vit_finetune.training.arguments import check_supported
from vit_finetune.training.checkpoints import check_output_dir, resolve_resume
from vit_finetune.training.curves import plot_training_curves
from vit_finetune.training.lock import output_dir_lock
from vit_finetune.training.losses import resolve_class_weights
from vit_finetune.training.metrics import compute_metrics
from vit_finetune.training.model_card import write_model_card
from vit_finetune.training.model_setup import build_model, build_preprocess, choose_attn_implementation
from vit_finetune.training.signals import GracefulInterrupt
from vit_finetune.training.trackers import tracker_runs
from vit_finetune.training.trainer import (ClassifierTrainer, TrainingOutOfMemoryError, check_resume_pickles,
                                           first_line)
from vit_finetune.typed import ConfigError

logger = logging.getLogger(__name__)

# Our defaults for TrainingArguments; any key set in the config wins.
DEFAULT_ARGUMENTS: dict[str, Any] = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",
    "greater_is_better": True,
    "save_total_limit": 2,
    "remove_unused_columns": False,  # the Trainer would drop our pixel column before collate
    "label_names": ["labels"],
    "report_to": "none",
    "logging_steps": 50,
}


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]


def train(run: RunConfig) -> TrainResult:
    """Fine-tune (or train from scratch) as `run` says; return the final metrics.

    The run holds `output_dir/_lock` throughout (a second run there stops with `OutputDirLockedError`).
    SIGINT/SIGTERM save a checkpoint and raise `TrainingInterrupted`; running out of device memory
    raises `TrainingOutOfMemoryError`; a NaN/inf loss raises `NonFiniteLossError`.
    """
    output_dir = Path(run.training.output_dir)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun / accelerate: process 0 holds the lock
        return _train(run, output_dir)
    with output_dir_lock(output_dir):
        return _train(run, output_dir)


def _train(run: RunConfig, output_dir: Path) -> TrainResult:
    check_output_dir(output_dir, run.training.resume_from_checkpoint, run.training.overwrite_output_dir)
    resume_from = resolve_resume(run.training.resume_from_checkpoint, output_dir)
    if resume_from is not None:
        check_resume_pickles(resume_from)
    args = build_training_arguments(run)
    set_seed(args.seed)
    preprocess = build_preprocess(run.model)
    splits = load_splits(run.data, seed=args.seed, preprocess=preprocess)
    check_trainable(splits, run.data.dataset)
    model = build_model(run.model, splits.id2label)
    choose_attn_implementation(model, run.model, args)
    trainer = make_trainer(args, model, preprocess, splits, run)
    if splits.validation is None:
        logger.warning("no validation split (data.validation_fraction=0): no model selection")
    with tracker_runs(args):
        train_output = fit(trainer, resume_from)
        test_metrics = trainer.evaluate(splits.test, metric_key_prefix="test")
    metrics = {**train_output.metrics, **test_metrics, "best_validation_accuracy": trainer.state.best_metric}
    if trainer.is_world_process_zero():
        save_run(trainer, output_dir, run, metrics)
    return TrainResult(output_dir=output_dir, metrics=metrics)


def check_trainable(splits: ImageSplits, dataset: str) -> None:
    """Refuse data a classifier cannot be trained or tested on: fewer than 2 classes, an empty split."""
    if len(splits.label_names) < 2:
        raise DataError(f"{dataset}: a classifier needs at least 2 classes, found {splits.label_names}")
    for name, split in (("train", splits.train), ("test", splits.test)):
        if len(split) == 0:
            raise DataError(f"{dataset}: the {name} split is empty")


def fit(trainer: ClassifierTrainer, resume_from: Path | None) -> TrainOutput:
    """`trainer.train()`, stopping cleanly on SIGINT/SIGTERM and naming the batch size on out-of-memory."""
    interrupt = GracefulInterrupt()
    trainer.add_callback(interrupt)
    try:
        with interrupt.handlers():
            output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except torch.OutOfMemoryError as err:
        raise TrainingOutOfMemoryError(
            f"out of memory at training.per_device_train_batch_size={trainer.args.per_device_train_batch_size} "
            f"({first_line(err)}): lower it (raise training.gradient_accumulation_steps to keep the effective "
            "batch), or on a GPU set training.auto_find_batch_size=true") from err
    step = trainer.state.global_step
    interrupt.raise_if_interrupted(step, str(Path(trainer.args.output_dir) / f"checkpoint-{step}"))
    return output


def build_training_arguments(run: RunConfig) -> TrainingArguments:
    """TrainingArguments from the config, our defaults and the resolved precision."""
    arguments = {**DEFAULT_ARGUMENTS, **run.training.arguments}
    if run.data.validation_fraction == 0:
        arguments.update(eval_strategy="no", load_best_model_at_end=False)
    arguments.update(trainer_precision_flags(resolve_precision(run.training.precision, "training.precision")))
    if compute_device().type == "cpu":  # lets torchrun/accelerate run several CPU processes on gloo
        arguments.setdefault("use_cpu", True)
    try:
        args = TrainingArguments(**arguments)
    except (TypeError, ValueError, ImportError) as err:
        raise ConfigError(f"{run.source}: training: {err}") from err
    check_supported(args, run)
    return args


def make_trainer(args, model, preprocess, splits: ImageSplits, run: RunConfig) -> ClassifierTrainer:
    """The Trainer wired with our collate function, metrics, augmentation, loss, sampler and strict checkpoint I/O."""
    class_weights = resolve_class_weights(run.training.class_weights, splits.train.labels, splits.label_names)
    if class_weights is not None:
        logger.info("class weights: %s", dict(zip(splits.label_names, [round(w, 4) for w in class_weights.tolist()])))
    return ClassifierTrainer(
        model=model,
        args=args,
        train_dataset=apply_train_augmentation(splits.train, run.data.augment),
        eval_dataset=splits.validation,
        data_collator=ImageCollator(preprocess),
        compute_metrics=compute_metrics,
        preprocess_config=preprocess,
        batch_augment=run.data.augment,
        class_weights=class_weights,
        sampler=run.data.sampler,
    )


def save_run(trainer: ClassifierTrainer, output_dir: Path, run: RunConfig, metrics: dict) -> None:
    """Config, metrics, Trainer log, curves and model card, then the final model; with `training.push_to_hub`
    the Trainer uploads the folder after saving the model (its private `_*` files and checkpoints left out)."""
    run_files.write_resolved_config(output_dir, run.to_dict())
    run_files.write_json(output_dir / run_files.METRICS, metrics)
    run_files.write_json(output_dir / run_files.TRAINER_LOG, trainer.state.log_history)
    plot_training_curves(trainer.state.log_history, output_dir / run_files.CURVES)
    write_model_card(output_dir, run, trainer.args, trainer.model.config, metrics, trainer.state.log_history)
    trainer.save_model(str(output_dir))
