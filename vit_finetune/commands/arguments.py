"""Command-line arguments shared by several commands (import-light: `--help` stays instant)."""

from __future__ import annotations

import argparse

from vit_finetune.precision import PRECISIONS


def positive_int(text: str) -> int:
    """argparse `type=` for counts that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """`--precision auto|bf16|fp16|fp32`, resolved as in training."""
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: bf16 only where the hardware is fast at it (as in training)")


def unit_interval(text: str) -> float:
    """argparse `type=` for a probability threshold in (0, 1)."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def add_threshold_argument(parser: argparse.ArgumentParser) -> None:
    """`--threshold`: the sigmoid score at or above which a multi-label model predicts a label."""
    parser.add_argument("--threshold", type=unit_interval, default=0.5,  # multi_label.DEFAULT_THRESHOLD
                        help="multi-label models: a label is predicted when its sigmoid score is at or above this "
                             "(default 0.5); single-label models ignore it")
