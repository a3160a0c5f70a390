"""The training loss when the model's own cross-entropy does not apply: soft targets and class weights.

`ClassifierTrainer.compute_loss` uses the model's cross-entropy (or the Trainer's label smoothing) for
class ids; with mixup / cutmix soft targets, `data.augment.label_smoothing` or `training.class_weights`
it trains with `soft_target_cross_entropy` below:

    loss = sum_i sum_k w_k t_ik (-log p_ik) / sum_i sum_k w_k t_ik

over the batch's rows i and classes k, targets t (rows sum to 1) and class weights w (all 1 without
`training.class_weights`). Without weights this is timm's `SoftTargetCrossEntropy` (the mean over the
batch of -sum_k t_k log p_k); with one-hot targets it is torch's weighted `cross_entropy` (each
example weighted by its class, normalised by the weights' sum); a mixed target spreads its example's
weight over its source classes in proportion to their shares.

`training.label_smoothing_factor` and `data.augment.label_smoothing` are one function: the target
(1 - s) t + s / K (the Trainer's `LabelSmoother` computes the same loss from class ids, and timm's
smoothed one-hots mixed with lam are the same targets because smoothing is linear). A run sets one of
them (`training/arguments.py` refuses both); `smooth_targets` applies the Trainer's one here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vit_finetune.typed import ConfigError

CLASS_WEIGHTS_KEY = "training.class_weights"


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                              class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """logits (B, K), targets float (B, K) summing to 1 per row, class weights (K,) or None -> the scalar loss above."""
    weighted = targets if class_weights is None else targets * class_weights.to(targets.device, targets.dtype)
    return torch.sum(-weighted * F.log_softmax(logits, dim=-1)) / weighted.sum()


def smooth_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class ids (B,) or float soft targets (B, K) -> targets (B, K) = (1 - smoothing) t + smoothing / K (float32
    for class ids, else the targets' dtype)."""
    targets = F.one_hot(labels.long(), num_classes).float() if labels.ndim == 1 else labels
    return targets if smoothing == 0 else targets * (1.0 - smoothing) + smoothing / num_classes


def balanced_class_weights(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """scikit-learn's `compute_class_weight("balanced")`: n_samples / (n_classes * count of each class), float64 (K,)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return len(labels) / (num_classes * counts)


def resolve_class_weights(setting: str | list[float] | None, labels: Sequence[int] | np.ndarray | None,
                          label_names: list[str]) -> torch.Tensor | None:
    """`training.class_weights` for the training split: None, "balanced" or one positive weight per class -> (K,) or None.

    Raises ConfigError naming the key: a list of the wrong length (its classes are listed), a weight that
    is not positive, or "balanced" with a class that has no training image or without the training labels
    (`labels` None: a stream's labels are not known before it is read).
    """
    if setting is None:
        return None
    if setting == "balanced" and labels is None:
        raise ConfigError(f"{CLASS_WEIGHTS_KEY}=balanced: needs the training labels before training, which a stream "
                          "does not have; give the weights as a list")
    if setting == "balanced":
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(label_names))
        missing = [name for name, count in zip(label_names, counts) if count == 0]
        if missing:
            raise ConfigError(f"{CLASS_WEIGHTS_KEY}=balanced: no training images of class(es) {missing}, so their "
                              "inverse frequency is undefined; give the weights as a list")
        return torch.as_tensor(balanced_class_weights(labels, len(label_names)), dtype=torch.float32)
    if len(setting) != len(label_names):
        raise ConfigError(f"{CLASS_WEIGHTS_KEY}: one weight per class is needed, {len(label_names)} in the order "
                          f"{label_names}; got {len(setting)}: {setting}")
    return torch.as_tensor(setting, dtype=torch.float32)
