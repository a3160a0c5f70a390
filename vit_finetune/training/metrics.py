"""The Trainer's evaluation metrics: accuracy as an `evaluate` metric that ships with the package (no hub
download), and balanced accuracy (`scores.py`)."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from vit_finetune.scores import balanced_accuracy


class Accuracy(evaluate.Metric):
    """Top-1 accuracy: the fraction of predictions equal to their reference label.

    The same definition as the hub's `evaluate.load("accuracy")`, which fetches its script from the
    Hugging Face Hub; this one is local, so training works offline.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Top-1 accuracy",
            citation="",
            inputs_description="predictions, references: integer class ids",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        return {"accuracy": float((predictions == references).mean()) if len(references) else 0.0}


def compute_metrics(eval_prediction) -> dict[str, float]:
    """`Trainer.compute_metrics`: logits and labels -> {"accuracy": ..., "balanced_accuracy": ...}."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    predictions = np.argmax(logits, axis=-1)
    return {**Accuracy().compute(predictions=predictions, references=labels),
            "balanced_accuracy": balanced_accuracy(predictions, np.asarray(labels))}
