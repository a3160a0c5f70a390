"""Training on a `StreamingImageDataset`: its data loader, its step count, and resuming its position.

accelerate would either read the whole stream on process 0 and send each process its batches
(`dispatch_batches`, its default for iterable data sets) or have every process read everything and
keep one batch in N (`IterableDatasetShard`). A streaming split already gives each process its own
shards, so its loader is prepared as a single-process one: accelerate's `DataLoaderShard` (device
placement, end-of-data tracking for gradient accumulation) without any re-sharding.

The stream is endless, so the run is counted in steps: `training.max_steps`, or, for a stream of
known size, `num_train_epochs` converted to steps (with evaluation and checkpoints every data epoch
when their strategy is "epoch"). On resume the Trainer's own batch skipping is off
(`ignore_data_skip`), and `StreamPosition` fast-forwards the stream instead: the records are read
but not decoded (`StreamingImageDataset.start_at`).
"""

from __future__ import annotations

import logging
import math

from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader
from transformers import TrainerCallback, TrainingArguments

from vit_finetune.data.streaming import StreamingImageDataset, training_steps
from vit_finetune.training.signals import workers_ignore_signals

logger = logging.getLogger(__name__)


def is_stream(dataset) -> bool:
    return isinstance(dataset, StreamingImageDataset)


def streaming_dataloader(trainer) -> DataLoader:
    """The train loader of a `StreamingImageDataset`: this process's lanes, its batch size, no re-sharding."""
    args, dataset = trainer.args, trainer.train_dataset
    dataset.configure(rank=args.process_index, world=args.world_size, batch_size=args.train_batch_size)
    workers = args.dataloader_num_workers
    loader = DataLoader(dataset, batch_size=args.train_batch_size, collate_fn=trainer.data_collator,
                        num_workers=workers, pin_memory=args.dataloader_pin_memory,
                        persistent_workers=args.dataloader_persistent_workers and workers > 0,
                        prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
                        worker_init_fn=workers_ignore_signals(None))  # a signal is the main process's to handle
    accelerator = trainer.accelerator
    return prepare_data_loader(loader, accelerator.device, num_processes=1, process_index=0,
                               put_on_device=accelerator.device_placement, dispatch_batches=False,
                               non_blocking=accelerator.non_blocking)


def streaming_arguments(args: TrainingArguments, train: StreamingImageDataset, configured: dict) -> dict:
    """`TrainingArguments` settings for a stream: steps from epochs when no `max_steps` is set, evaluation and
    checkpoints every data epoch where `configured` says "epoch" (which would mean once, at the end), and no
    batch skipping by the Trainer on resume (`StreamPosition` fast-forwards the stream instead)."""
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    settings = {"ignore_data_skip": True}
    if args.max_steps <= 0:
        settings["max_steps"] = training_steps(train, args.num_train_epochs, args.world_size, per_step)
        logger.info("streaming: %s epoch(s) of ~%s examples = %d steps", args.num_train_epochs, train.estimated_size,
                    settings["max_steps"])
    if train.estimated_size is not None:
        epoch_steps = max(1, math.ceil(train.estimated_size / (args.world_size * per_step)))
        for strategy, steps in (("eval_strategy", "eval_steps"), ("save_strategy", "save_steps")):
            if configured.get(strategy) == "epoch":
                settings |= {strategy: "steps", steps: epoch_steps}
    return settings


class StreamPosition(TrainerCallback):
    """On a resumed run, tell the stream how many batches this process had consumed (before any worker starts)."""

    def __init__(self, train: StreamingImageDataset, enabled: bool = True):
        self.train, self.enabled = train, enabled  # disabled: the user set training.ignore_data_skip

    def on_train_begin(self, args, state, control, **kwargs):
        if self.enabled and state.global_step > 0:
            batches = state.global_step * args.gradient_accumulation_steps
            logger.info("streaming: resuming after %d batches per process (read again, not decoded)", batches)
            self.train.start_at(batches)
