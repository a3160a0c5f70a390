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
import tempfile
from pathlib import Path
from typing import Any

import yaml

from vit_finetune.typed import ConfigError
from vit_finetune.yaml_config import load_yaml

RESOLVED_CONFIG = "run_config.yaml"
METRICS = "metrics.json"
TRAINER_LOG = "trainer_log.json"
CURVES = "training_curves.png"


def check_writable(folder: Path, setting: str) -> None:
    """Refuse (`ConfigError` naming `setting`) an output folder this process cannot create or write files in,
    before any work whose results would then be lost. Probes with a nameless temporary file in the folder, or in
    its nearest existing parent when it does not exist yet: nothing is left behind, not even the folder."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:  # EACCES, EROFS, ENOTDIR (a file on the way), ENOSPC, ...
        raise ConfigError(f"{setting} {folder}: not writable ({err.strerror or err}: {existing})") from None


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
