"""Command-line entry points. Each module has `main(argv) -> int`; scripts/ and `vit-finetune` call them."""

from __future__ import annotations

import logging
import sys
from typing import Callable

EXIT_USER_ERROR = 2  # bad config, data, checkpoint or image, output_dir in use or full: the message names the culprit
EXIT_NON_FINITE_LOSS = 3  # the message names the step; the last good checkpoint is untouched
EXIT_OUT_OF_MEMORY = 4  # the message names training.per_device_train_batch_size
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C); during training a checkpoint was saved first
EXIT_TERMINATED = 143  # SIGTERM during training, after saving a checkpoint


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (config, data, checkpoint, image), not a bug."""
    from vit_finetune.data.errors import DataError
    from vit_finetune.data.images import ImageFileError
    from vit_finetune.modeling.convert import CheckpointError
    from vit_finetune.training.checkpoints import ResumeError
    from vit_finetune.training.durable_writes import DiskFullError
    from vit_finetune.typed import ConfigError

    return (ConfigError, DataError, ImageFileError, CheckpointError, ResumeError, DiskFullError, FileNotFoundError)


def run_guarded(body: Callable[[], int]) -> int:
    """Run a command body; turn user errors into one line on stderr and a non-zero exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return body()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except documented_errors() as err:  # anything else is a bug: its traceback propagates
        status = exit_status(err)
        print(f"{'interrupted' if status >= 128 else 'error'}: {err}", file=sys.stderr)
        return status


def run_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that end a run with their own status: interrupted (128 + signal), non-finite loss or weights
    (3), out of memory (4)."""
    from vit_finetune.training.signals import TrainingInterrupted
    from vit_finetune.training.trainer import NonFiniteLossError, TrainingOutOfMemoryError

    return (TrainingInterrupted, NonFiniteLossError, TrainingOutOfMemoryError)


def documented_errors() -> tuple[type[BaseException], ...]:
    """Every exception the command line turns into one message line and a documented exit status."""
    return run_errors() + user_errors()


def exit_status(err: BaseException) -> int | None:
    """The documented exit status for `err`, or None for a bug (which then propagates)."""
    interrupted, non_finite, out_of_memory = run_errors()
    if isinstance(err, interrupted):
        return err.exit_status
    if isinstance(err, non_finite):
        return EXIT_NON_FINITE_LOSS
    if isinstance(err, out_of_memory):
        return EXIT_OUT_OF_MEMORY
    if isinstance(err, user_errors()):
        return EXIT_USER_ERROR
    return None
