"""One training run: data, model, Trainer, test evaluation, and the artefacts in the output folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments, set_seed

from vit_finetune.config import RunConfig
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.sources import ImageSplits, load_splits
from vit_finetune.training import artifacts
from vit_finetune.training.checkpoints import check_output_dir, resolve_resume
from vit_finetune.training.metrics import compute_metrics
from vit_finetune.training.model_setup import build_model, build_preprocess
from vit_finetune.training.precision import precision_arguments, resolve_precision
from vit_finetune.training.trainer import ClassifierTrainer
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
    """Fine-tune (or train from scratch) as `run` says; return the final metrics."""
    output_dir = Path(run.training.output_dir)
    check_output_dir(output_dir, run.training.resume_from_checkpoint, run.training.overwrite_output_dir)
    resume_from = resolve_resume(run.training.resume_from_checkpoint, output_dir)
    args = build_training_arguments(run)
    set_seed(args.seed)
    preprocess = build_preprocess(run.model)
    splits = load_splits(run.data, seed=args.seed, preprocess=preprocess)
    model = build_model(run.model, splits.id2label)
    trainer = make_trainer(args, model, preprocess, splits, run)
    if splits.validation is None:
        logger.warning("no validation split (data.validation_fraction=0): no model selection")
    train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    test_metrics = trainer.evaluate(splits.test, metric_key_prefix="test")
    metrics = {**train_output.metrics, **test_metrics, "best_validation_accuracy": trainer.state.best_metric}
    if trainer.is_world_process_zero():
        save_run(trainer, output_dir, run, metrics)
    return TrainResult(output_dir=output_dir, metrics=metrics)


def build_training_arguments(run: RunConfig) -> TrainingArguments:
    """TrainingArguments from the config, our defaults and the resolved precision."""
    arguments = {**DEFAULT_ARGUMENTS, **run.training.arguments}
    if run.data.validation_fraction == 0:
        arguments.update(eval_strategy="no", load_best_model_at_end=False)
    arguments.update(precision_arguments(resolve_precision(run.training.precision)))
    if not torch.cuda.is_available():  # CPU-only: lets torchrun/accelerate run multi-process on gloo
        arguments.setdefault("use_cpu", True)
    try:
        return TrainingArguments(**arguments)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{run.source}: training: {err}") from err


def make_trainer(args, model, preprocess, splits: ImageSplits, run: RunConfig) -> ClassifierTrainer:
    """The Trainer wired with our collate function, accuracy metric and strict checkpoint I/O."""
    from vit_finetune.data.sources import apply_train_augmentation

    return ClassifierTrainer(
        model=model,
        args=args,
        train_dataset=apply_train_augmentation(splits.train, run.data.augment),
        eval_dataset=splits.validation,
        data_collator=ImageCollator(preprocess),
        compute_metrics=compute_metrics,
        preprocess_config=preprocess,
    )


def save_run(trainer: ClassifierTrainer, output_dir: Path, run: RunConfig, metrics: dict) -> None:
    """Final model folder plus config, metrics, Trainer log and curves."""
    trainer.save_model(str(output_dir))
    artifacts.write_resolved_config(output_dir, run.to_dict())
    artifacts.write_json(output_dir / artifacts.METRICS, metrics)
    artifacts.write_json(output_dir / artifacts.TRAINER_LOG, trainer.state.log_history)
    artifacts.plot_training_curves(trainer.state.log_history, output_dir / artifacts.CURVES)
