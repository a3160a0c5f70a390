"""The training loss with soft targets and class weights (training/losses.py), against reference definitions:
timm's SoftTargetCrossEntropy written out by hand, torch's weighted cross_entropy, the Trainer's LabelSmoother
and scikit-learn's balanced class weights."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from transformers import TrainingArguments
from transformers.trainer_pt_utils import LabelSmoother

from vit_finetune.config import run_config_from_dict
from vit_finetune.data.config import AugmentConfig
from vit_finetune.data.mixup import mix_batch
from vit_finetune.modeling.config import ClassifierConfig, encoder_config_for_size
from vit_finetune.modeling.model import ImageClassifier
from vit_finetune.training.losses import (balanced_class_weights, resolve_class_weights, smooth_targets,
                                          soft_target_cross_entropy)
from vit_finetune.training.trainer import ClassifierTrainer
from vit_finetune.typed import ConfigError

CLASSES = 5


def logits_and_labels(count: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(count, CLASSES, dtype=torch.float64, generator=generator, requires_grad=True)
    return logits, torch.randint(0, CLASSES, (count,), generator=generator)


def mixed_targets(labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    pixels = torch.zeros(len(labels), 3, 8, 8)
    cfg = AugmentConfig(mixup_alpha=1.0, cutmix_alpha=1.0, mixup_mode="elem", label_smoothing=smoothing)
    return mix_batch(pixels, labels, CLASSES, cfg, torch.Generator().manual_seed(1))[1].double()


def reference_loss(logits: torch.Tensor, targets: torch.Tensor, weights: list[float] | None = None) -> float:
    """sum_i sum_k w_k t_ik (-log softmax(logits_i)_k) / sum_i sum_k w_k t_ik, with plain Python arithmetic."""
    weights = weights or [1.0] * CLASSES
    total = norm = 0.0
    for row, target in zip(logits.tolist(), targets.tolist()):
        log_sum = math.log(sum(math.exp(v) for v in row))
        total += sum(w * t * (log_sum - v) for w, t, v in zip(weights, target, row))
        norm += sum(w * t for w, t in zip(weights, target))
    return total / norm


def test_soft_targets_give_timms_soft_target_cross_entropy():
    logits, labels = logits_and_labels()
    targets = mixed_targets(labels, smoothing=0.1)
    assert torch.allclose(targets.sum(-1), torch.ones(6, dtype=torch.float64))
    loss = soft_target_cross_entropy(logits, targets)
    timm = torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()  # timm's SoftTargetCrossEntropy
    assert loss.item() == pytest.approx(reference_loss(logits, targets), rel=1e-12)
    assert loss.item() == pytest.approx(timm.item(), rel=1e-6)  # timm divides by B, the float32 targets' sum is B +- 1e-7
    loss.backward()  # differentiable, as a training loss must be
    assert logits.grad is not None


def test_one_hot_targets_give_torchs_cross_entropy_with_and_without_weights():
    logits, labels = logits_and_labels(count=12)
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25], dtype=torch.float64)
    one_hot = smooth_targets(labels, CLASSES).double()
    assert soft_target_cross_entropy(logits, one_hot).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-12)
    assert soft_target_cross_entropy(logits, one_hot, weights).item() == pytest.approx(
        F.cross_entropy(logits, labels, weight=weights).item(), rel=1e-12)


def test_weighted_soft_targets_spread_each_example_over_its_classes():
    logits, labels = logits_and_labels()
    targets, weights = mixed_targets(labels), [0.5, 2.0, 1.0, 3.0, 0.25]
    loss = soft_target_cross_entropy(logits, targets, torch.tensor(weights))
    assert loss.item() == pytest.approx(reference_loss(logits, targets, weights), rel=1e-12)
    assert loss.item() != pytest.approx(soft_target_cross_entropy(logits, targets).item(), rel=1e-3)


def test_smoothing_is_the_trainers_label_smoother_and_commutes_with_mixing():
    logits, labels = logits_and_labels(count=8)
    smoothed = soft_target_cross_entropy(logits, smooth_targets(labels, CLASSES, 0.1).double())
    trainer = LabelSmoother(epsilon=0.1)({"logits": logits}, labels)
    assert smoothed.item() == pytest.approx(trainer.item(), rel=1e-6)
    mixed_then_smoothed = smooth_targets(mixed_targets(labels), CLASSES, 0.1)
    assert torch.allclose(mixed_then_smoothed, mixed_targets(labels, smoothing=0.1), atol=1e-7)  # timm's order


def test_balanced_weights_are_scikit_learns():
    labels = np.array([0] * 19 + [1] * 1 + [2] * 5)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert np.allclose(balanced_class_weights(labels, 3), expected, rtol=1e-12)
    resolved = resolve_class_weights("balanced", labels, ["a", "b", "c"])
    assert resolved.dtype == torch.float32 and torch.allclose(resolved, torch.tensor(expected, dtype=torch.float32))
    assert resolve_class_weights(None, labels, ["a", "b", "c"]) is None
    assert resolve_class_weights([1, 2, 3], labels, ["a", "b", "c"]).tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("setting, labels, message", [
    ([1.0, 2.0], [0, 1, 2], r"training.class_weights: one weight per class is needed, 3 in the order \['a', 'b', 'c'\]"),
    ("balanced", [0, 0, 2], r"training.class_weights=balanced: no training images of class\(es\) \['b'\]"),
])
def test_class_weights_that_do_not_fit_the_data_name_the_key(setting, labels, message):
    with pytest.raises(ConfigError, match=message):
        resolve_class_weights(setting, labels, ["a", "b", "c"])


@pytest.mark.parametrize("value, message", [
    ("inverse", "expected null, 'balanced' or a list"),
    ([], "expected null, 'balanced' or a list"),
    ([1, True], "expected null, 'balanced' or a list"),
    ([1.0, -2.0], "every weight must be positive"),
    ([1.0, 0], "every weight must be positive"),
])
def test_class_weights_config_is_validated(value, message):
    with pytest.raises(ConfigError, match=f"training.class_weights: {message}"):
        run_config_from_dict({"training": {"class_weights": value}})


def test_class_weights_config_is_kept_and_written_back():
    run = run_config_from_dict({"training": {"class_weights": [1, 2.5]}})
    assert run.training.class_weights == [1.0, 2.5] and "class_weights" not in run.training.arguments
    assert run.to_dict()["training"]["class_weights"] == [1.0, 2.5]
    assert run_config_from_dict({"training": {"class_weights": "balanced"}}).training.class_weights == "balanced"


def tiny_trainer(tmp_path, **kwargs) -> ClassifierTrainer:
    encoder = encoder_config_for_size("cifar-tiny", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, patch_size=8)
    model = ImageClassifier(ClassifierConfig(encoder=encoder, pooling="mean", num_labels=CLASSES))
    smoothing = kwargs.pop("label_smoothing_factor", 0.0)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                             label_smoothing_factor=smoothing)
    return ClassifierTrainer(model=model, args=args, **kwargs)


def test_compute_loss_weights_training_batches_and_leaves_evaluation_alone(tmp_path):
    """With class weights the training loss is the weighted cross-entropy, smoothed by label_smoothing_factor;
    with weights of 1 it is the Trainer's own smoothed loss; evaluation keeps the model's loss."""
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25])
    trainer = tiny_trainer(tmp_path, class_weights=weights, label_smoothing_factor=0.1)
    model = trainer.model
    pixels, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % CLASSES
    with torch.no_grad():
        logits = model.train()(pixels).logits
        weighted = trainer.compute_loss(model, {"pixel_values": pixels, "labels": labels})
        expected = soft_target_cross_entropy(logits, smooth_targets(labels, CLASSES, 0.1), weights)
        assert weighted == pytest.approx(expected.item(), rel=1e-6)
        trainer.class_weights = torch.ones(CLASSES)
        unweighted = trainer.compute_loss(model, {"pixel_values": pixels, "labels": labels})
        trainer.class_weights = None
        assert unweighted == pytest.approx(trainer.compute_loss(model, {"pixel_values": pixels, "labels": labels}).item(),
                                           rel=1e-6)
        trainer.class_weights = weights
        assert trainer.compute_loss(model.eval(), {"pixel_values": pixels, "labels": labels}) == pytest.approx(
            LabelSmoother(0.1)({"logits": model(pixels).logits}, labels).item(), rel=1e-6)
