"""The model card (`README.md`) of a trained model, in the Hugging Face Hub's format.

YAML metadata first (`library_name`, `pipeline_tag`, `tags`, `datasets`, `metrics`, `base_model` and a
`model-index` with the test accuracy, built with `huggingface_hub.ModelCardData`), then what the model
is, how to use it, its labels, the hyper-parameters and the training curves. Local paths are private:
a data set or checkpoint given as a local folder appears by its folder name only, and only hub ids go
into the `datasets` / `base_model` metadata (the Hub links those).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData
from transformers import TrainingArguments

from vit_finetune.config import RunConfig
from vit_finetune.data.config import looks_local
from vit_finetune.modeling.config import ClassifierConfig
from vit_finetune.run_files import CURVES

MODEL_CARD = "README.md"
MAX_LABELS_LISTED = 50
ARCH_NAMES = {"vit": "ViT", "siglip": "SigLIP"}


def is_hub_id(name: str) -> bool:
    """A hub id, not a local path or file pattern (`data.config.looks_local`, the rule data and model loading follow)."""
    return not looks_local(name)


def public_name(name: str) -> str:
    """A hub id as it is; a local path by its last component only."""
    return name if is_hub_id(name) else Path(name).expanduser().resolve().name


def model_card(run: RunConfig, args: TrainingArguments, config: ClassifierConfig, metrics: dict[str, Any],
               log_history: list[dict[str, Any]]) -> str:
    """The card's text: YAML metadata between `---` lines, then markdown."""
    name = args.hub_model_id.split("/")[-1] if args.hub_model_id else Path(args.output_dir).resolve().name
    sections = [f"# {name}", _summary(run, config, metrics), _usage(args, name), _labels(config),
                "## Training\n\n### Hyper-parameters\n\n" + _table(hyperparameters(run, args, config)),
                "### Training curves\n\n" + _curves(log_history)]
    return f"---\n{_metadata(run, config, name, metrics).to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"


def write_model_card(output_dir: Path, run: RunConfig, args: TrainingArguments, config: ClassifierConfig,
                     metrics: dict[str, Any], log_history: list[dict[str, Any]]) -> None:
    """`model_card(...)` into `output_dir/README.md`."""
    (output_dir / MODEL_CARD).write_text(model_card(run, args, config, metrics, log_history), encoding="utf-8")


def headline_metric(config: ClassifierConfig) -> str:
    """The metric a card reports (the `test_` / `best_validation_` key of metrics.json): mAP for multi-label."""
    return "mAP" if config.problem_type == "multi_label_classification" else "accuracy"


def _metadata(run: RunConfig, config: ClassifierConfig, name: str, metrics: dict[str, Any]) -> ModelCardData:
    dataset, checkpoint, arch = run.data.dataset, run.model.checkpoint, config.encoder.arch
    metric = headline_metric(config)
    result = EvalResult(task_type="image-classification", task_name="Image Classification",
                        dataset_type=public_name(dataset), dataset_name=public_name(dataset),
                        dataset_split=run.data.eval_split, metric_type=metric, metric_name=metric,
                        metric_value=metrics[f"test_{metric}"])
    return ModelCardData(
        library_name="transformers", pipeline_tag="image-classification",
        tags=["image-classification", "vision", arch, "vit_finetune", "generated_from_trainer"],
        datasets=[dataset] if is_hub_id(dataset) else None, metrics=[metric],
        base_model=checkpoint if checkpoint and is_hub_id(checkpoint) else None,
        model_name=name, eval_results=[result])


def _summary(run: RunConfig, config: ClassifierConfig, metrics: dict[str, Any]) -> str:
    dataset, checkpoint = _link(run.data.dataset, "datasets/"), run.model.checkpoint
    origin = (f"A fine-tune of {_link(checkpoint, '')}" if checkpoint else
              f"A {ARCH_NAMES.get(config.encoder.arch, config.encoder.arch)} ({_size(config)}) trained from scratch")
    metric = headline_metric(config)
    best = metrics.get(f"best_validation_{metric}")
    validation = f"; best validation {metric} {best:.2%}" if best is not None else ""
    return (f"{origin} on {dataset} for image classification into {config.num_labels} classes, trained with "
            f"vit_finetune (the Hugging Face Trainer).\n\nTest {metric}: **{metrics[f'test_{metric}']:.2%}** on the "
            f"`{run.data.eval_split}` split{validation}.")


def _usage(args: TrainingArguments, name: str) -> str:
    model = args.hub_model_id or name
    return ("## Use\n\n```python\nfrom transformers import pipeline\n\n"
            f'classifier = pipeline("image-classification", model="{model}")\n'
            'print(classifier("image.jpg"))\n```')


def _labels(config: ClassifierConfig) -> str:
    names = [config.id2label[i] for i in range(config.num_labels)]
    listed = ", ".join(f"`{n}`" for n in names[:MAX_LABELS_LISTED])
    more = f", ... ({len(names) - MAX_LABELS_LISTED} more: see `config.json`)" if len(names) > MAX_LABELS_LISTED else ""
    return f"## Labels\n\n{listed}{more}"


def hyperparameters(run: RunConfig, args: TrainingArguments, config: ClassifierConfig) -> dict[str, Any]:
    """The settings that define the training, as the card lists them."""
    batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    augment = run.data.augment
    return {
        "learning rate": args.learning_rate,
        "train batch size": f"{batch} ({args.per_device_train_batch_size} per device x {args.world_size} "
                            f"processes x {args.gradient_accumulation_steps} accumulation steps)",
        "optimizer": f"{args.optim.value}" + (f" ({args.optim_args})" if args.optim_args else ""),
        "weight decay": args.weight_decay,
        "lr scheduler": f"{args.lr_scheduler_type.value}, {_warmup(args.warmup_steps)}",
        "training length": f"{args.max_steps} steps" if args.max_steps > 0 else f"{args.num_train_epochs} epochs",
        "label smoothing": args.label_smoothing_factor,
        "max grad norm": args.max_grad_norm,
        "precision": run.training.precision,
        "seed": args.seed,
        "model": f"{config.encoder.arch} {_size(config)}, pooling {config.pooling}",
        "augmentation": f"crop {augment.crop}, horizontal flip {augment.horizontal_flip}, "
                        f"auto_augment {augment.auto_augment}, mixup {augment.mixup_alpha}, cutmix {augment.cutmix_alpha}",
    }


def _curves(log_history: list[dict[str, Any]]) -> str:
    """The figure (uploaded next to the card) and the evaluations as a table."""
    rows, last_loss = [], None
    for entry in log_history:
        last_loss = entry.get("loss", last_loss)
        if "eval_accuracy" in entry:
            rows.append(f"| {entry['step']} | {entry['epoch']:.2f} | {_number(last_loss)} | "
                        f"{_number(entry.get('eval_loss'))} | {entry['eval_accuracy']:.4f} |")
    table = ("| step | epoch | training loss | validation loss | validation accuracy |\n|---|---|---|---|---|\n"
             + "\n".join(rows)) if rows else "No evaluation during training."
    return f"![Training loss and validation accuracy]({CURVES})\n\n{table}"


def _table(values: dict[str, Any]) -> str:
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in values.items())


def _link(name: str, kind: str) -> str:
    """A hub id as a link to its page; a local path as its folder name (a local data set / checkpoint)."""
    if is_hub_id(name):
        return f"[{name}](https://huggingface.co/{kind}{name})"
    return f"`{public_name(name)}` (a local {'data set' if kind else 'checkpoint'})"


def _size(config: ClassifierConfig) -> str:
    encoder = config.encoder
    return (f"{encoder.num_hidden_layers} layers, width {encoder.hidden_size}, {encoder.image_size} px, "
            f"patch {encoder.patch_size}")


def _warmup(steps: float) -> str:
    """transformers 5's `warmup_steps`: a count, or below 1 the fraction of the training steps."""
    return f"warmup {steps:.0%} of the steps" if 0 < steps < 1 else f"warmup {int(steps)} steps"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
