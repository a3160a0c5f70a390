#!/usr/bin/env python
"""Evaluate a checkpoint on a split: `python scripts/eval.py --checkpoint runs/cifar10 [section.key=value ...]`."""

import sys

from vit_finetune.commands.eval import main

if __name__ == "__main__":
    sys.exit(main())
