#!/usr/bin/env python
"""Benchmark the pipeline: `python scripts/benchmark.py [--quick] [--output-dir runs/benchmark]`."""

import sys

from vit_finetune.commands.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
