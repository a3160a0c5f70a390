"""What a finished run leaves next to the final model: config, metrics, log and curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

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
            return yaml.safe_load(path.read_text())
    return None


def plot_training_curves(log_history: list[dict[str, Any]], path: Path) -> None:
    """Training loss and validation accuracy against the optimiser step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    val = [(e["step"], e["eval_accuracy"]) for e in log_history if "eval_accuracy" in e]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot(*zip(*train), label="train loss")
    ax_loss.set(xlabel="step", ylabel="loss", title="Training loss")
    if val:
        ax_acc.plot(*zip(*val), marker="o", label="validation accuracy")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="Validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
