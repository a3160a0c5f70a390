"""One training run: data, model, Trainer, test evaluation, and the artefacts in the output folder."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from vit_finetune import run_files
from vit_finetune.config import RunConfig
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.errors import DataError
from vit_finetune.data.sources import ImageSplits, apply_train_augmentation, len_or_none, load_splits
from vit_finetune.precision import compute_device, resolve_precision, trainer_precision_flags
from vit_finetune.training.arguments import check_supported
from vit_finetune.training.checkpoints import (STAGING_DIR, check_output_dir, remove_earlier_checkpoints,
                                               require_directory, resolve_resume)
from vit_finetune.training.curves import plot_training_curves
from vit_finetune.training.durable_writes import disk_full_error, tensor_bytes
from vit_finetune.training.finetune import (check_available, checkpoint_files, describe_trainable, finetune_metrics,
                                            prepare_model)
from vit_finetune.training.lock import output_dir_lock
from vit_finetune.training.losses import resolve_class_weights
from vit_finetune.training.model_card import write_model_card
from vit_finetune.training.model_setup import build_model, build_preprocess, choose_attn_implementation
from vit_finetune.training.resume_state import check_resume_labels, read_trainer_state, train_or_finish
from vit_finetune.training.signals import GracefulInterrupt
from vit_finetune.training.streaming import StreamPosition, is_stream, streaming_arguments
from vit_finetune.training.tasks import (best_metric_key, check_task_arguments, problem_type, task_arguments,
                                        task_compute_metrics)
from vit_finetune.training.trackers import tracker_runs
from vit_finetune.training.trainer import (ClassifierTrainer, TrainingOutOfMemoryError, check_resume_pickles,
                                           first_line)
from vit_finetune.typed import ConfigError

logger = logging.getLogger(__name__)

CPU_ALLOCATOR_FAILURE = "DefaultCPUAllocator: can't allocate memory"

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
    SIGINT/SIGTERM save a checkpoint and raise `TrainingInterrupted`; running out of device or CPU memory
    raises `TrainingOutOfMemoryError`; a NaN/inf loss raises `NonFiniteLossError`.
    """
    output_dir = Path(run.training.output_dir)
    require_directory(output_dir)
    run_files.check_writable(output_dir, "output_dir")
    if not is_main_process():  # torchrun / accelerate: process 0 holds the lock
        return _train(run, output_dir)
    with output_dir_lock(output_dir):
        return _train(run, output_dir)


def _train(run: RunConfig, output_dir: Path) -> TrainResult:
    check_available(run.finetune)
    check_output_dir(output_dir, run.training.resume_from_checkpoint, run.training.overwrite_output_dir)
    if run.training.overwrite_output_dir and run.training.resume_from_checkpoint is False and is_main_process():
        remove_earlier_checkpoints(output_dir)
    resume_from = resolve_resume(run.training.resume_from_checkpoint, output_dir, checkpoint_files(run.finetune))
    if resume_from is not None:
        check_resume_pickles(resume_from)
        read_trainer_state(resume_from)
    args = build_training_arguments(run)  # the final ones once the splits are known
    set_seed(args.seed)
    preprocess = build_preprocess(run.model)
    splits = load_data(run, args, preprocess)
    check_trainable(splits, run.data.dataset)
    if resume_from is not None:
        check_resume_labels(resume_from, splits.label_names, run.data.dataset)
    extra = streaming_arguments(args, splits.train, configured_arguments(run)) if is_stream(splits.train) else {}
    args = build_training_arguments(run, extra, has_validation=splits.validation is not None)
    model = build_model(run.model, splits.id2label, preprocess, problem_type(run.data.task))
    choose_attn_implementation(model, run.model, args)
    model = prepare_model(model, run.finetune)
    logger.info(describe_trainable(model, run.finetune))
    trainer = make_trainer(args, model, preprocess, splits, run)
    if splits.validation is None:
        logger.warning("no validation split (data.validation_fraction=0 and none in the data set): no model selection")
    with tracker_runs(args):
        train_output = fit(trainer, resume_from)
        final_weights = trainer.use_better_weights()
        test_metrics = trainer.evaluate(splits.test, metric_key_prefix="test")
    best = {best_metric_key(args.metric_for_best_model): trainer.state.best_metric}
    metrics = {**train_output.metrics, **test_metrics, **best,
               **finetune_metrics(trainer.model, trainer.optimizer, final_weights)}
    if trainer.is_world_process_zero():
        save_run(trainer, output_dir, run, metrics)
    return TrainResult(output_dir=output_dir, metrics=metrics)


def load_data(run: RunConfig, args: TrainingArguments, preprocess) -> ImageSplits:
    """`load_splits`; in a multi-process run the main process of each node decodes the pixel cache first
    and the others wait, then read its file (a stream writes nothing and loads everywhere at once)."""
    decoding_first = (contextlib.nullcontext() if run.data.streaming
                      else args.main_process_first(local=True, desc="decoding the data set"))
    with decoding_first:
        return load_splits(run.data, seed=args.seed, preprocess=preprocess)


def is_main_process() -> bool:
    """Process 0 of a torchrun / accelerate launch (or the only process), before accelerate is set up."""
    return int(os.environ.get("RANK", "0")) == 0


def check_trainable(splits: ImageSplits, dataset: str) -> None:
    """Refuse data a classifier cannot be trained or tested on: fewer than 2 classes, an empty split."""
    if len(splits.label_names) < 2:
        raise DataError(f"{dataset}: a classifier needs at least 2 classes, found {splits.label_names}")
    for name, split in (("train", splits.train), ("test", splits.test)):
        if len_or_none(split) == 0:
            raise DataError(f"{dataset}: the {name} split is empty")


def fit(trainer: ClassifierTrainer, resume_from: Path | None) -> TrainOutput:
    """`trainer.train()`, stopping cleanly on SIGINT/SIGTERM and naming the batch size on out-of-memory."""
    interrupt = GracefulInterrupt()
    trainer.add_callback(interrupt)
    try:
        with interrupt.handlers():
            output = train_or_finish(trainer, resume_from)
    except (RuntimeError, OSError, SafetensorError) as err:  # torch.OutOfMemoryError is a RuntimeError
        stop = training_stop_error(err, trainer)
        if stop is None:
            raise
        raise stop from err
    step = trainer.state.global_step
    interrupt.raise_if_interrupted(step, str(Path(trainer.args.output_dir) / f"checkpoint-{step}"))
    return output


def training_stop_error(err: BaseException, trainer: ClassifierTrainer) -> Exception | None:
    """The error that ends the run for `err`: out of (device or CPU) memory, or a full disk while a checkpoint was
    being written (its staging folder exists); None for anything else."""
    if isinstance(err, RuntimeError) and is_out_of_memory(err):
        return TrainingOutOfMemoryError(
            f"out of memory at training.per_device_train_batch_size={trainer.args.per_device_train_batch_size} "
            f"({first_line(err)}): lower it (raise training.gradient_accumulation_steps to keep the effective "
            "batch), or on a GPU set training.auto_find_batch_size=true")
    output_dir = Path(trainer.args.output_dir)
    staged = sorted((output_dir / STAGING_DIR).glob(f"{PREFIX_CHECKPOINT_DIR}-*"))
    if not staged:
        return None
    optimizer_state = trainer.optimizer.state if trainer.optimizer is not None else {}
    return disk_full_error(err, staged[0].name, output_dir, tensor_bytes(trainer.model, optimizer_state))


def is_out_of_memory(err: RuntimeError) -> bool:
    """A GPU's `torch.OutOfMemoryError`, or the CPU allocator's failure, which torch raises as a plain
    RuntimeError ("DefaultCPUAllocator: can't allocate memory")."""
    return isinstance(err, torch.OutOfMemoryError) or CPU_ALLOCATOR_FAILURE in str(err)


def configured_arguments(run: RunConfig) -> dict[str, Any]:
    """Our `TrainingArguments` defaults and those of the task (`tasks.py`), with the config's on top."""
    return {**DEFAULT_ARGUMENTS, **task_arguments(run.data.task), **run.training.arguments}


def build_training_arguments(run: RunConfig, extra: dict[str, Any] | None = None,
                             has_validation: bool | None = None) -> TrainingArguments:
    """TrainingArguments from the config, our defaults and the resolved precision (`extra` on top).

    Without a validation split (`has_validation`; before the data is loaded: validation_fraction > 0)
    there is no evaluation during training and no best model."""
    arguments = {**configured_arguments(run), **(extra or {})}
    check_task_arguments(run.data.task, arguments, run.source)
    if not (run.data.validation_fraction > 0 if has_validation is None else has_validation):
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
    """The Trainer wired with our collate function, the task's metrics, augmentation, loss, sampler and strict
    checkpoint I/O."""
    train = apply_train_augmentation(splits.train, run.data.augment)
    labels = getattr(splits.train, "labels", None)  # None for a stream
    class_weights = resolve_class_weights(run.training.class_weights, labels, splits.label_names)
    if class_weights is not None:
        logger.info("class weights: %s", dict(zip(splits.label_names, [round(w, 4) for w in class_weights.tolist()])))
    trainer = ClassifierTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=splits.validation,
        data_collator=ImageCollator(preprocess),
        compute_metrics=task_compute_metrics(run.data.task),
        preprocess_config=preprocess,
        batch_augment=run.data.augment,
        finetune=run.finetune,
        class_weights=class_weights,
        sampler=run.data.sampler,
    )
    if is_stream(train):
        trainer.add_callback(StreamPosition(train, enabled=not run.training.arguments.get("ignore_data_skip", False)))
    return trainer


def save_run(trainer: ClassifierTrainer, output_dir: Path, run: RunConfig, metrics: dict) -> None:
    """Config, metrics, Trainer log, curves and model card, then the final model; with `training.push_to_hub`
    the Trainer uploads the folder after saving the model (its private `_*` files and checkpoints left out)."""
    run_files.write_resolved_config(output_dir, run.to_dict())
    run_files.write_json(output_dir / run_files.METRICS, metrics)
    run_files.write_json(output_dir / run_files.TRAINER_LOG, trainer.state.log_history)
    plot_training_curves(trainer.state.log_history, output_dir / run_files.CURVES)
    write_model_card(output_dir, run, trainer.args, trainer.model.config, metrics, trainer.state.log_history)
    try:
        trainer.save_model(str(output_dir))
    except (OSError, SafetensorError) as err:
        full = disk_full_error(err, "the final model", output_dir, tensor_bytes(trainer.model))
        if full is None:
            raise
        raise full from err
