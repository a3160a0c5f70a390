#!/usr/bin/env python
"""Benchmark the pipeline: `python scripts/benchmark.py [--quick] [--output-dir runs/benchmark]`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ sits beside scripts/, not installed

from benchmarks.command import main  # noqa: E402 - needs the repository root on the path

if __name__ == "__main__":
    sys.exit(main())
