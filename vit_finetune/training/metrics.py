"""Accuracy as an `evaluate` metric that ships with the package (no hub download)."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np


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
    """`Trainer.compute_metrics`: logits and labels -> {"accuracy": ...}."""
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    return Accuracy().compute(predictions=np.argmax(logits, axis=-1), references=labels)
