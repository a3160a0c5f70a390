"""The training loss of a classifier head, chosen by HF's `problem_type` (as `ViTForImageClassification` does).

single-label (`None` / "single_label_classification"): softmax cross-entropy on int64 class ids (B,),
or on float (B, K) class probabilities (soft targets: mixup / cutmix, label smoothing).
"multi_label_classification": sigmoid + binary cross-entropy on float (B, K) multi-hot targets, the mean
over every (image, label) pair, as `torch.nn.BCEWithLogitsLoss` and HF compute it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ProblemType


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: ProblemType | None) -> torch.Tensor:
    """The mean loss of logits (B, K) against `labels` for the head's `problem_type`."""
    if problem_type == "multi_label_classification":
        if labels.shape != logits.shape:
            raise ValueError(f"multi-label targets must be multi-hot rows of shape {tuple(logits.shape)}, "
                             f"got {tuple(labels.shape)}")
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)
