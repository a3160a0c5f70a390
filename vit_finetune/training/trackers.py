"""Experiment trackers (`training.report_to`): one tracker run per training run, test metrics included.

The Trainer's callbacks do the logging (TensorBoard, MLflow, Weights & Biases, ...). One gap: the MLflow
callback ends its run when training ends, so the test-set evaluation that follows would open a second,
nameless run holding only the test metrics. `tracker_runs` opens the MLflow run itself before training
(the callback then logs into it and leaves it open) and ends it after the test evaluation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from transformers import TrainingArguments


@contextlib.contextmanager
def tracker_runs(args: TrainingArguments) -> Iterator[None]:
    """Hold the trackers' runs open for the block: training and the test evaluation after it."""
    if "mlflow" not in args.report_to or args.process_index != 0:
        yield
        return
    import mlflow  # reads MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME, as the Trainer's callback does

    if mlflow.active_run() is not None:  # a run opened by the caller stays the caller's to end
        yield
        return
    mlflow.start_run(run_name=args.run_name)
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)
