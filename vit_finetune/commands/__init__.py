"""Command-line entry points. Each module has `main(argv) -> int`; scripts/ and `vit-finetune` call them."""

from __future__ import annotations

import logging
import sys
from typing import Callable

EXIT_USER_ERROR = 2  # bad config, data, checkpoint or image: the message names the culprit
EXIT_NON_FINITE_LOSS = 3
EXIT_INTERRUPTED = 130


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
        from vit_finetune.training.trainer import NonFiniteLossError

        if isinstance(err, NonFiniteLossError):
            print(f"error: {err}", file=sys.stderr)
            return EXIT_NON_FINITE_LOSS
        if isinstance(err, user_errors()):
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise
