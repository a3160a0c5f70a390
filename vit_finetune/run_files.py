"""The files a training run leaves next to its final model, and how to write and read them.

    output_dir/run_config.yaml      the resolved run config (defaults filled in): eval reuses its data settings
    output_dir/metrics.json         test accuracy, train runtime and throughput, best validation accuracy
    output_dir/trainer_log.json     the Trainer's log history (loss, learning rate, eval accuracy per step)
    output_dir/training_curves.png  loss and validation accuracy against the step

Training writes them; evaluation, prediction and the benchmark read or write the same formats without
importing anything from `training/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from vit_finetune.yaml_config import load_yaml

RESOLVED_CONFIG = "run_config.yaml"
METRICS = "metrics.json"
TRAINER_LOG = "trainer_log.json"
CURVES = "training_curves.png"


def write_json(path: Path, payload: Any) -> None:
    """Write `payload` as indented JSON via a temporary file, so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def write_resolved_config(output_dir: Path, config: dict[str, Any]) -> None:
    """The fully resolved run config (defaults filled in), for eval and for reproducing the run."""
    (output_dir / RESOLVED_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))


def read_resolved_config(model_dir: Path) -> dict[str, Any] | None:
    """The run config saved with a trained model (looks in the folder and its parent)."""
    for folder in (model_dir, model_dir.parent):
        path = folder / RESOLVED_CONFIG
        if path.is_file():
            return load_yaml(path.read_text(), str(path))
    return None
