"""Multi-label scores and metrics: sigmoid scores, mAP, micro / macro F1 at a threshold, per-label P/R/F1.

    results = multi_label_metrics(logits, targets, label_names, threshold=0.5)
    print(format_multi_label_scores(results))

A multi-label head (`problem_type: multi_label_classification`) scores every label independently with
a sigmoid; a label is predicted when its score is at or above the threshold. mAP is the macro average
of the per-label average precision (sklearn's `average_precision_score`, threshold-free), over the
labels that have at least one positive example (a label without positives has no defined AP; its AP
is reported as null). Precision / recall / F1 are sklearn's `precision_recall_fscore_support` of the
thresholded predictions, per label, micro (pooled over all (image, label) pairs) and macro averaged.
Used by evaluation (`eval.py --threshold`) and by training's model selection (`mAP`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.5
SELECTION_METRICS = ("mAP", "micro_f1", "macro_f1")  # the scalars logged at each evaluation during training


def sigmoid_scores(logits: np.ndarray) -> np.ndarray:
    """Per-label probabilities (N, K) of logits (N, K), in float64 (no overflow for large logits)."""
    from scipy.special import expit  # imported here: prediction imports this module and starts fast
    return expit(np.asarray(logits, dtype=np.float64))


def average_precisions(scores: np.ndarray, targets: np.ndarray) -> list[float | None]:
    """sklearn's average precision of each label's column; None for a label without positive examples."""
    from sklearn.metrics import average_precision_score

    return [float(average_precision_score(targets[:, k], scores[:, k])) if targets[:, k].any() else None
            for k in range(targets.shape[1])]


def mean_average_precision(per_label: list[float | None]) -> float:
    """The mean of the defined per-label average precisions (0.0 when none is defined)."""
    defined = [ap for ap in per_label if ap is not None]
    return float(np.mean(defined)) if defined else 0.0


def multi_label_metrics(logits: np.ndarray, targets: np.ndarray, label_names: list[str],
                        threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """mAP, micro / macro precision, recall and F1 at `threshold`, exact-match ratio and per-label scores.

    logits: (N, K) raw model outputs; targets: (N, K) multi-hot (0 / 1).
    """
    from sklearn.metrics import precision_recall_fscore_support

    scores, targets = sigmoid_scores(logits), np.asarray(targets).astype(bool)
    predicted = scores >= threshold  # (N, K)
    ap = average_precisions(scores, targets)
    precision, recall, f1, support = precision_recall_fscore_support(targets, predicted, average=None, zero_division=0)
    micro = precision_recall_fscore_support(targets, predicted, average="micro", zero_division=0)[:3]
    per_label = {name: {"precision": float(p), "recall": float(r), "f1": float(f), "average_precision": a,
                        "support": int(s)}
                 for name, p, r, f, a, s in zip(label_names, precision, recall, f1, ap, support)}
    return {
        "task": "multi_label",
        "mAP": mean_average_precision(ap),
        "threshold": float(threshold),
        "micro_avg": dict(zip(("precision", "recall", "f1"), map(float, micro))),
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "exact_match": float((predicted == targets).all(axis=1).mean()) if len(targets) else 0.0,
        "per_label": per_label,
        "labels": list(label_names),
    }


def selection_metrics(logits: np.ndarray, targets: np.ndarray,
                      threshold: float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """The scalars of `SELECTION_METRICS` (mAP, micro_f1, macro_f1), for the Trainer's evaluation log."""
    names = [str(k) for k in range(np.shape(targets)[1])]
    results = multi_label_metrics(logits, targets, names, threshold)
    return {"mAP": results["mAP"], "micro_f1": results["micro_avg"]["f1"], "macro_f1": results["macro_avg"]["f1"]}


def format_multi_label_scores(results: dict[str, Any]) -> str:
    """A short table of `multi_label_metrics` results: mAP and the F1s at the threshold, then one line per label."""
    lines = [f"mAP {results['mAP']:.4f}  at threshold {results['threshold']:g}: "
             f"micro F1 {results['micro_avg']['f1']:.4f}  macro F1 {results['macro_avg']['f1']:.4f}  "
             f"exact match {results['exact_match']:.4f}",
             f"{'label':<20} {'AP':>9} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for name, scores in results["per_label"].items():
        ap = "-" if scores["average_precision"] is None else f"{scores['average_precision']:.4f}"
        lines.append(f"{name:<20} {ap:>9} {scores['precision']:>9.4f} {scores['recall']:>9.4f} {scores['f1']:>9.4f} "
                     f"{scores['support']:>8d}")
    return "\n".join(lines)
