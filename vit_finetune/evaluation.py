"""Evaluate a checkpoint on a labelled split: accuracy, balanced accuracy, top-k, per-class scores, confusion matrix.

    output = evaluate_checkpoint("runs/cifar10", overrides=["data.max_eval_samples=1000"])
    print(format_summary(output.results))        # files in runs/cifar10/eval-test/

The split is the one recorded in the checkpoint's `run_config.yaml` (a `--config` file or dotted
overrides such as `data.dataset=... data.eval_split=...` change it) and goes through the training
data path: `load_splits` + `ImageCollator`, no augmentation. accelerate places the model and the
batches (CUDA when present); bf16 runs only where `precision.resolve_precision("auto")` picks it. Results:
`eval_results.json` and `confusion_matrix.png` in `<checkpoint>/eval-<split>/` unless told otherwise
(for a hub id: `eval/<org>--<name>-<split>/`, never the hub cache). A multi-label model (sigmoid head) is
scored with mAP, micro / macro F1 at a threshold and per-label scores (`multi_label.py`), without a
confusion matrix.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from matplotlib.figure import Figure
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vit_finetune.config import RunConfig, apply_override, load_run_config, run_config_from_dict
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.errors import DataError, LabelMismatchError, check_labels  # noqa: F401 (re-exported)
from vit_finetune.data.preprocess import PreprocessConfig
from vit_finetune.data.sources import ImageDataset, len_or_none, load_splits
from vit_finetune.loading import LoadedModel, forward_logits, load_for_inference
from vit_finetune.multi_label import DEFAULT_THRESHOLD, format_multi_label_scores, multi_label_metrics
from vit_finetune.precision import accelerate_mixed_precision, resolve_precision
from vit_finetune.run_files import check_writable, write_json
from vit_finetune.scores import balanced_accuracy
from vit_finetune.typed import ConfigError

logger = logging.getLogger(__name__)

EVAL_RESULTS = "eval_results.json"
CONFUSION_MATRIX = "confusion_matrix.png"
MAX_TOP_K = 5
MAX_ANNOTATED_CLASSES = 30  # write counts into the confusion-matrix cells up to this many classes


@dataclass
class SplitLogits:
    """Model outputs on a whole split, in data-set order."""

    logits: np.ndarray  # (N, num_labels) float32
    labels: np.ndarray  # (N,) int64, or (N, num_labels) float32 multi-hot for a multi-label model
    seconds: float
    device: str
    precision: str  # resolved: fp32 / bf16 / fp16


@dataclass
class EvalOutput:
    """What `evaluate_checkpoint` wrote: the results (as in eval_results.json) and the folder."""

    results: dict[str, Any]
    output_dir: Path


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    threshold: float = DEFAULT_THRESHOLD,
) -> EvalOutput:
    """Evaluate a model folder / checkpoint-N / HF folder or hub id; write results and the confusion matrix.

    A multi-label model gets `multi_label.multi_label_metrics` at `threshold` instead (no confusion matrix)."""
    loaded = load_for_inference(checkpoint)
    run = eval_run_config(loaded, config, overrides)
    batch_size = batch_size or training_argument(run, "per_device_eval_batch_size")
    results_dir = Path(output_dir) if output_dir else default_output_dir(checkpoint, run.data.eval_split)
    check_writable(results_dir, "--output-dir" if output_dir else "results folder")
    outputs = collect_logits(loaded.model, load_eval_split(loaded, run), loaded.preprocess, batch_size, precision,
                             num_workers=training_argument(run, "dataloader_num_workers"))
    if loaded.model.config.multi_label:
        results = multi_label_metrics(outputs.logits, outputs.labels, loaded.label_names, threshold)
    else:
        results = classification_metrics(outputs.logits, outputs.labels, loaded.label_names)
    results |= run_summary(outputs, run, str(checkpoint), batch_size)
    write_eval_outputs(results, results_dir)
    return EvalOutput(results=results, output_dir=results_dir)


def default_output_dir(checkpoint: str | Path, split: str) -> Path:
    """`<folder>/eval-<split>` for a local folder; `eval/<org>--<name>-<split>` for a hub id (not the hub cache)."""
    if Path(checkpoint).is_dir():
        return Path(checkpoint) / f"eval-{split}"
    return Path("eval") / f"{str(checkpoint).replace('/', '--')}-{split}"


def eval_run_config(loaded: LoadedModel, config: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """The run config to evaluate with: a `--config` file, else the checkpoint's recorded one; overrides on top."""
    if config is not None:
        return load_run_config(config, list(overrides))
    tree = copy.deepcopy(loaded.run_config or {})
    tree["data"] = {"task": model_task(loaded), **(tree.get("data") or {})}  # a folder without a run config
    for override in overrides:
        apply_override(tree, override)
    if not (tree.get("data") or {}).get("dataset"):
        raise ConfigError(f"{loaded.model_dir}: no run_config.yaml recorded with this model, so the data set is unknown; "
                          "give data.dataset=<hub id or folder> [data.eval_split=<split>] or --config FILE")
    return run_config_from_dict(tree, source=f"{loaded.model_dir} (recorded run config + overrides)")


def training_argument(run: RunConfig, name: str) -> Any:
    """A `TrainingArguments` setting of the run: the configured value, else the TrainingArguments default."""
    from transformers import TrainingArguments

    if name in run.training.arguments:
        return run.training.arguments[name]
    return next(field.default for field in fields(TrainingArguments) if field.name == name)


def load_eval_split(loaded: LoadedModel, run: RunConfig) -> ImageDataset:
    """The run's eval split, decoded as in training, after checking that its classes are the model's."""
    if run.data.task != model_task(loaded):
        raise LabelMismatchError(f"{loaded.model_dir} is a {model_task(loaded)} model but data.task is {run.data.task}")
    splits = load_splits(run.data, seed=training_argument(run, "seed"), preprocess=loaded.preprocess)
    check_labels(loaded.label_names, splits.label_names, str(loaded.model_dir), run.data.dataset)
    if len_or_none(splits.test) == 0:
        raise DataError(f"{run.data.dataset}: split {run.data.eval_split!r} has no images")
    return splits.test


def model_task(loaded: LoadedModel) -> str:
    """The `data.task` a model was trained for: multi_label for a sigmoid head, else single_label."""
    return "multi_label" if loaded.model.config.multi_label else "single_label"


def collect_logits(
    model: torch.nn.Module,
    dataset: ImageDataset,
    preprocess: PreprocessConfig,
    batch_size: int,
    precision: str = "auto",
    num_workers: int = 0,
) -> SplitLogits:
    """Run `model` over `dataset` in order; accelerate places the model and the batches."""
    precision = resolve_precision(precision, "--precision")
    accelerator = Accelerator(mixed_precision=accelerate_mixed_precision(precision))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=ImageCollator(preprocess))
    model = accelerator.prepare_model(model, evaluation_mode=True)
    loader = accelerator.prepare_data_loader(loader)
    logits, labels = [], []
    start = time.perf_counter()
    for batch in tqdm(loader, desc="Evaluating", disable=not accelerator.is_local_main_process):
        batch_logits = forward_logits(model, batch["pixel_values"], precision)  # (B, num_labels)
        batch_logits, batch_labels = accelerator.gather_for_metrics((batch_logits, batch["labels"]))
        logits.append(batch_logits.cpu())
        labels.append(batch_labels.cpu())
    seconds = time.perf_counter() - start
    return SplitLogits(logits=torch.cat(logits).numpy(), labels=torch.cat(labels).numpy(), seconds=seconds,
                       device=str(accelerator.device), precision=precision)


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the `k` highest logits."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]  # (N, k)
    return float((top == labels[:, None]).any(axis=1).mean())


def classification_metrics(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, top-k (k = min(5, classes)), per-class and macro precision/recall/F1,
    confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(label_names)))
    predictions = logits.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    k = min(MAX_TOP_K, len(label_names))
    per_class = {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for name, p, r, f, s in zip(label_names, precision, recall, f1, support)}
    return {
        "accuracy": float((predictions == labels).mean()),
        "balanced_accuracy": balanced_accuracy(predictions, labels),
        "top5_accuracy": top_k_accuracy(logits, labels, k),
        "top_k": k,
        "per_class": per_class,
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "labels": list(label_names),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=ids).tolist(),  # rows: true, cols: predicted
    }


def run_summary(outputs: SplitLogits, run: RunConfig, checkpoint: str, batch_size: int) -> dict[str, Any]:
    """What was evaluated, where and how fast."""
    count = len(outputs.labels)
    return {"checkpoint": checkpoint, "dataset": run.data.dataset, "split": run.data.eval_split,
            "num_images": count, "images_per_second": count / max(outputs.seconds, 1e-9),
            "eval_seconds": outputs.seconds, "batch_size": batch_size, "device": outputs.device,
            "precision": outputs.precision}


def confusion_matrix_figure(matrix: list[list[int]], label_names: list[str], title: str = "Confusion matrix") -> Figure:
    """A heat map of `matrix` (rows: true class, columns: predicted) with the class names on both axes."""
    counts = np.asarray(matrix)
    side = max(4.0, 0.5 * len(label_names) + 2.5)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    ticks = range(len(label_names))
    ax.set_xticks(ticks, labels=label_names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=label_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(label_names) <= MAX_ANNOTATED_CLASSES:
        threshold = counts.max() / 2 if counts.size else 0
        for (row, col), value in np.ndenumerate(counts):
            ax.text(col, row, str(value), ha="center", va="center", color="white" if value > threshold else "black")
    fig.tight_layout()
    return fig


def write_eval_outputs(results: dict[str, Any], output_dir: Path) -> None:
    """`eval_results.json` and `confusion_matrix.png` into `output_dir` (created if needed)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / EVAL_RESULTS, results)
    if results.get("task") == "multi_label":  # no confusion matrix of independent labels
        logger.info("wrote %s to %s", EVAL_RESULTS, output_dir)
        return
    title = f"{Path(results['dataset']).name} ({results['split']}): accuracy {results['accuracy']:.4f}"
    figure = confusion_matrix_figure(results["confusion_matrix"], results["labels"], title)
    figure.savefig(output_dir / CONFUSION_MATRIX, dpi=100)
    logger.info("wrote %s and %s to %s", EVAL_RESULTS, CONFUSION_MATRIX, output_dir)


def summary_header(results: dict[str, Any]) -> str:
    """What was evaluated, how many images, how fast, where."""
    return (f"{results['dataset']} ({results['split']}), {results['num_images']} images, "
            f"{results['images_per_second']:.1f} img/s on {results['device']} ({results['precision']})")


def format_summary(results: dict[str, Any]) -> str:
    """A short human-readable table: overall scores, then one line per class."""
    if results.get("task") == "multi_label":
        return "\n".join([summary_header(results), format_multi_label_scores(results)])
    lines = [summary_header(results),
             f"accuracy {results['accuracy']:.4f}  balanced accuracy {results['balanced_accuracy']:.4f}  "
             f"top-{results['top_k']} {results['top5_accuracy']:.4f}  "
             f"macro F1 {results['macro_avg']['f1']:.4f}",
             f"{'class':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for name, scores in results["per_class"].items():
        lines.append(f"{name:<20} {scores['precision']:>9.4f} {scores['recall']:>9.4f} {scores['f1']:>9.4f} "
                     f"{scores['support']:>8d}")
    return "\n".join(lines)
