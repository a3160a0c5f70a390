#!/usr/bin/env python
"""Fine-tune a Vision Transformer: `python scripts/train.py --config cifar10 [section.key=value ...]`."""

import sys

from vit_finetune.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
