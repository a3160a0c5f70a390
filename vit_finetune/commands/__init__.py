"""Command-line entry points. Each module has `main(argv) -> int`; scripts/ and `vit-finetune` call them."""

from __future__ import annotations

import logging
import sys
from typing import Callable

EXIT_USER_ERROR = 2  # bad config, data, checkpoint or image, or output_dir in use: the message names the culprit
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
    from vit_finetune.typed import ConfigError

    return (ConfigError, DataError, ImageFileError, CheckpointError, ResumeError, FileNotFoundError)


def run_guarded(body: Callable[[], int]) -> int:
    """Run a command body; turn user errors into one line on stderr and a non-zero exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return body()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        status = exit_status(err)
        if status is None:
            raise
        print(f"{'interrupted' if status >= 128 else 'error'}: {err}", file=sys.stderr)
        return status


def exit_status(err: Exception) -> int | None:
    """The documented exit status for `err`, or None for a bug (which then propagates)."""
    from vit_finetune.training.signals import TrainingInterrupted
    from vit_finetune.training.trainer import NonFiniteLossError, TrainingOutOfMemoryError

    if isinstance(err, TrainingInterrupted):
        return err.exit_status
    if isinstance(err, NonFiniteLossError):
        return EXIT_NON_FINITE_LOSS
    if isinstance(err, TrainingOutOfMemoryError):
        return EXIT_OUT_OF_MEMORY
    if isinstance(err, user_errors()):
        return EXIT_USER_ERROR
    return None
