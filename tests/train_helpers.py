"""Tiny run configs for the training tests (small model, generated data, CPU, seconds per run)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

TINY_MODEL = dict(arch="vit", size="cifar-tiny", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, image_size=32, patch_size=8, pooling="mean")


def tiny_run_tree(data_dir: Path, output_dir: Path, **training: Any) -> dict:
    """A config tree (as parsed YAML) for a few quick epochs of a tiny ViT on `data_dir`."""
    tree = {
        "model": dict(TINY_MODEL),
        "data": {"dataset": str(data_dir), "validation_fraction": 0.2,
                 "augment": {"crop": "random_padded", "padding": 2, "horizontal_flip": True}},
        "training": {"output_dir": str(output_dir), "num_train_epochs": 2, "per_device_train_batch_size": 8,
                     "learning_rate": 3e-3, "logging_steps": 2, "seed": 0, "save_total_limit": None,
                     "dataloader_num_workers": 0, "precision": "fp32"},
    }
    tree["training"].update(training)
    return copy.deepcopy(tree)


def weights(folder: Path) -> dict:
    """The tensors of a saved model folder, by the names in the file."""
    return load_file(str(Path(folder) / "model.safetensors"))
