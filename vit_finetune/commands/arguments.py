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
