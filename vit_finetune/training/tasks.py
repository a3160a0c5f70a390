"""What a run's `data.task` changes in training: the head's loss, the evaluation metrics, the selection metric.

single_label: softmax / cross-entropy head, accuracy at each evaluation, the best model by accuracy.
multi_label: sigmoid / binary cross-entropy head (`problem_type: multi_label_classification`, which the
saved folder carries, so `transformers.pipeline` returns sigmoid scores), mAP and micro / macro F1 at
0.5 at each evaluation (`multi_label.selection_metrics`), the best model by mAP. A key set in the
config's `training:` section wins over these defaults.
"""

from __future__ import annotations

from typing import Any, Callable

from vit_finetune.modeling.config import ProblemType
from vit_finetune.multi_label import selection_metrics
from vit_finetune.training.metrics import compute_metrics
from vit_finetune.typed import ConfigError

PROBLEM_TYPES: dict[str, ProblemType | None] = {"single_label": None, "multi_label": "multi_label_classification"}
TASK_ARGUMENTS: dict[str, dict[str, Any]] = {
    "single_label": {},
    "multi_label": {"metric_for_best_model": "mAP", "greater_is_better": True},
}


def problem_type(task: str) -> ProblemType | None:
    """HF's `problem_type` of the classifier head for `data.task`."""
    return PROBLEM_TYPES[task]


def task_arguments(task: str) -> dict[str, Any]:
    """`TrainingArguments` defaults of `data.task` (on top of the run's defaults, under the config's keys)."""
    return dict(TASK_ARGUMENTS[task])


def task_compute_metrics(task: str) -> Callable[[Any], dict[str, float]]:
    """The Trainer's `compute_metrics` for `data.task`."""
    return compute_multi_label_metrics if task == "multi_label" else compute_metrics


def compute_multi_label_metrics(eval_prediction) -> dict[str, float]:
    """`Trainer.compute_metrics` for multi-hot labels: logits (N, K) and targets (N, K) -> mAP, micro_f1, macro_f1."""
    logits, targets = eval_prediction.predictions, eval_prediction.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    return selection_metrics(logits, targets)


def check_task_arguments(task: str, arguments: dict[str, Any], source: str) -> None:
    """Refuse `TrainingArguments` that do not fit `data.task`: the Trainer's label smoothing replaces the model's
    loss with a softmax cross-entropy, which a multi-label head must not get."""
    if task == "multi_label" and arguments.get("label_smoothing_factor"):
        raise ConfigError(f"{source}: training.label_smoothing_factor: the Trainer smooths a softmax cross-entropy, "
                          f"which does not fit data.task: multi_label (sigmoid + binary cross-entropy); set it to 0")


def best_metric_key(metric_for_best_model: str | None) -> str:
    """The run metrics' key of the best validation score: `best_validation_<metric>` (accuracy by default)."""
    return f"best_validation_{(metric_for_best_model or 'accuracy').removeprefix('eval_')}"
