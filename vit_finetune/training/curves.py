"""The training-curves figure of a finished run (`run_files.CURVES`): loss and validation accuracy per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
