#!/usr/bin/env python
"""Predict image labels: `python scripts/predict.py --checkpoint runs/cifar10 cat.jpg [more.png ...]`."""

import sys

from vit_finetune.commands.predict import main

if __name__ == "__main__":
    sys.exit(main())
