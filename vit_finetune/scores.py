"""Classification scores shared by the Trainer's evaluation (`training/metrics.py`) and the eval command
(`evaluation.py`)."""

from __future__ import annotations

import warnings

import numpy as np


def balanced_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's `balanced_accuracy_score`: the mean recall over the classes present in `labels` (0 if none).

    Predicted classes absent from `labels` count as errors only (sklearn's warning about them is silenced).
    """
    from sklearn.metrics import balanced_accuracy_score

    if len(labels) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(labels, predictions))
