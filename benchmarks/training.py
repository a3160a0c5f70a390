"""Training throughput of our pipeline against the classic notebook pipeline, on the same images.

Reference ("the notebook", written plainly below): `ViTForImageClassification.from_pretrained`,
`ViTImageProcessor` applied per batch through `datasets.with_transform` on the image files, the
notebook's `collate_fn` (`torch.stack` of pixel_values, `torch.tensor` of labels) and a stock
`Trainer` in its default precision. Ours: the code path of `scripts/train.py` (`load_splits`,
`build_model`, `build_training_arguments`, `make_trainer`) with a shipped run config's settings
(augmentation, precision `auto`, data-loader workers) for this machine.

Both load the same randomly initialised checkpoint (written locally with `save_pretrained`), use the
same batch size, learning rate and number of steps, and read the same CIFAR-10 files (ours from its
decoded cache). Runs alternate reference, ours, ours, reference, ... so machine noise hits both; the
per-step wall time (data loading included) is read between consecutive `on_step_end` callbacks,
dropping the first `warmup` steps of each run.
"""

from __future__ import annotations

import copy
import gc
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import Trainer, TrainerCallback, TrainingArguments, ViTConfig, ViTForImageClassification

from benchmarks.machine import synchronize
from benchmarks.profile import op_profile
from vit_finetune.config import RunConfig, build_model_section, resolve_config_path, run_config_from_dict
from vit_finetune.data.sources import ImageSplits, load_splits
from vit_finetune.modeling.config import EncoderConfig, encoder_config_for_size
from vit_finetune.precision import compute_device
from vit_finetune.training.model_setup import build_model, build_preprocess, choose_attn_implementation
from vit_finetune.training.run import build_training_arguments, make_trainer
from vit_finetune.typed import ConfigError

LEARNING_RATE = 5e-5
SEED = 42


@dataclass(frozen=True)
class TrainCase:
    """One side-by-side training comparison.

    `config`: the shipped run config whose settings our side uses (a bare name looked up in configs/);
    `size`: a named model size, or None for the config's own model section (random-init sizes).
    """

    name: str
    config: str
    size: str | None
    image_size: int
    batch_size: int
    steps: int
    warmup: int = 1
    rounds: int = 1  # each round runs reference + ours, in alternating order
    model_overrides: tuple[tuple[str, Any], ...] = ()  # EncoderConfig fields on top (tests: micro models)
    as_shipped: bool = False  # also time our side with the config's own random-init model (e.g. PatchDropout)

    @property
    def max_steps(self) -> int:
        return self.warmup + self.steps


# ---- the models and configs both sides start from --------------------------------------------


def config_tree(config: str) -> dict:
    """The parsed YAML of a shipped run config, or an empty tree if it does not exist (yet)."""
    try:
        path = resolve_config_path(config)
    except ConfigError:
        return {}
    return yaml.safe_load(path.read_text()) or {}


def case_encoder(case: TrainCase) -> EncoderConfig:
    """The ViT both sides train: the named size, else the run config's random-init model section."""
    overrides = dict(case.model_overrides)
    if case.size is not None:
        return encoder_config_for_size(case.size, arch="vit", image_size=case.image_size, **overrides)
    model = dict(config_tree(case.config).get("model") or {}, arch="vit", image_size=case.image_size)
    for key in ("checkpoint", "pooling", "image_mean", "image_std", "patch_dropout"):  # the reference's computation
        model.pop(key, None)
    model.setdefault("size", "cifar-tiny")
    return build_model_section(model | overrides).random_init_encoder()


def write_reference_checkpoint(encoder: EncoderConfig, label_names: list[str], directory: Path) -> Path:
    """A randomly initialised `ViTForImageClassification` + its `ViTImageProcessor`, saved like a hub snapshot."""
    from transformers import ViTImageProcessor

    id2label = dict(enumerate(label_names))
    config = ViTConfig(**encoder.to_hf_vision_dict(), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(SEED)
    ViTForImageClassification(config).save_pretrained(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "falling back to ViTImageProcessorPil" without torchvision
        processor = ViTImageProcessor(size={"height": encoder.image_size, "width": encoder.image_size},
                                      image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(directory)
    return directory


def our_run_config(case: TrainCase, checkpoint: Path, data_dir: str, output_dir: Path,
                   compile: bool = False, as_shipped: bool = False) -> RunConfig:
    """The shipped run config with the benchmark's model, data slice and step count (no eval, no saving).

    The model is `checkpoint` (the reference's weights and computation), or with `as_shipped` the
    config's own random-init model section (its pooling, PatchDropout, ...) at the case's sizes.
    """
    tree = copy.deepcopy(config_tree(case.config))
    if as_shipped:
        tree["model"] = dict(tree.get("model") or {}, image_size=case.image_size, **dict(case.model_overrides))
    else:
        tree["model"] = {"checkpoint": str(checkpoint), "pooling": "cls"}
    tree["data"] = dict(tree.get("data") or {}, dataset=data_dir, validation_fraction=0.0,
                        max_train_samples=case.batch_size * case.max_steps, max_eval_samples=1)
    training = dict(tree.get("training") or {})
    for key in ("num_train_epochs", "warmup_ratio", "resume_from_checkpoint"):
        training.pop(key, None)
    training.update(output_dir=str(output_dir), max_steps=case.max_steps, per_device_train_batch_size=case.batch_size,
                    learning_rate=LEARNING_RATE, seed=SEED, save_strategy="no", eval_strategy="no",
                    load_best_model_at_end=False, logging_steps=1000, disable_tqdm=True, overwrite_output_dir=True)
    if compile:
        training["torch_compile"] = True
    tree["training"] = training
    return run_config_from_dict(tree, source=f"configs/{case.config}.yaml (benchmark settings)")


# ---- the two pipelines -----------------------------------------------------------------------


def our_trainer(run: RunConfig, splits: ImageSplits) -> Trainer:
    """Our Trainer, built by the same functions `training.run.train` uses."""
    args = build_training_arguments(run)
    model = build_model(run.model, splits.id2label)
    choose_attn_implementation(model, run.model, args)
    return make_trainer(args, model, build_preprocess(run.model), splits, run)


def reference_trainer(checkpoint: Path, image_files: list[str], labels: list[int], label_names: list[str],
                      batch_size: int, max_steps: int, output_dir: Path) -> Trainer:
    """The classic notebook pipeline, as plain as it is written there."""
    import datasets
    from transformers import ViTImageProcessor

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=label_names)})
    ds = datasets.Dataset.from_dict({"img": image_files, "label": labels}, features=features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        feature_extractor = ViTImageProcessor.from_pretrained(str(checkpoint))

    def transform(example_batch):
        inputs = feature_extractor([x for x in example_batch["img"]], return_tensors="pt")
        inputs["labels"] = example_batch["label"]
        return inputs

    def collate_fn(batch):
        return {"pixel_values": torch.stack([x["pixel_values"] for x in batch]),
                "labels": torch.tensor([x["labels"] for x in batch])}

    model = ViTForImageClassification.from_pretrained(str(checkpoint))
    args = TrainingArguments(output_dir=str(output_dir), per_device_train_batch_size=batch_size, max_steps=max_steps,
                             learning_rate=LEARNING_RATE, remove_unused_columns=False, save_strategy="no",
                             logging_steps=1000, report_to="none", disable_tqdm=True, seed=SEED)
    return Trainer(model=model, args=args, data_collator=collate_fn, train_dataset=ds.with_transform(transform))


# ---- timing ----------------------------------------------------------------------------------


class StepTimes(TrainerCallback):
    """Wall-clock time at the start of training and at the end of every optimiser step."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def _mark(self) -> None:
        synchronize(compute_device())
        self.marks.append(time.perf_counter())

    def on_train_begin(self, args, state, control, **kwargs):
        self._mark()

    def on_step_end(self, args, state, control, **kwargs):
        self._mark()

    def step_seconds(self, warmup: int) -> list[float]:
        """Seconds per step (data loading included), without the first `warmup` steps."""
        return [b - a for a, b in zip(self.marks, self.marks[1:])][warmup:]


def timed_steps(trainer: Trainer, warmup: int) -> list[float]:
    """Train and return the post-warm-up step times."""
    timer = StepTimes()
    trainer.add_callback(timer)
    trainer.train()
    return timer.step_seconds(warmup)


def input_loader(trainer: Trainer) -> torch.utils.data.DataLoader:
    """The trainer's training data and collate function in one process: the input pipeline's own cost.

    (With DataLoader workers the same work runs beside the model, on the same cores.)
    """
    return torch.utils.data.DataLoader(trainer.train_dataset, batch_size=trainer.args.per_device_train_batch_size,
                                       shuffle=True, collate_fn=trainer.data_collator, num_workers=0)


def data_seconds_per_batch(trainer: Trainer, batches: int) -> float:
    """Median seconds to produce one training batch (read, decode, augment, preprocess, collate), no model.

    The first batch is not timed unless it is the only one.
    """
    iterator = iter(input_loader(trainer))
    start = time.perf_counter()
    next(iterator)
    seconds = [time.perf_counter() - start]
    for _ in range(batches):
        start = time.perf_counter()
        if next(iterator, None) is None:
            break
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:] or seconds)


def compare_training(case: TrainCase, checkpoint: Path, data_dir: str, workdir: Path, compile: bool = False,
                     data_batches: int = 3, profile: bool = True) -> dict[str, Any]:
    """Images/s of the reference and of our pipeline for `case`, side by side; ratio = ours / reference.

    `checkpoint`: the `write_reference_checkpoint` folder both sides load. Also, per pipeline: the
    time of its data path alone per batch (so the report can split a step into input pipeline and
    model) and, if `profile`, a torch.profiler breakdown of one forward + backward.
    """
    run = our_run_config(case, checkpoint, data_dir, workdir / "ours", compile)
    splits = load_splits(run.data, seed=SEED, preprocess=build_preprocess(run.model))  # as training.run.train does
    files, labels = splits.train.sources, splits.train.labels
    build = {
        "reference": lambda: reference_trainer(checkpoint, files, labels, splits.label_names, case.batch_size,
                                               case.max_steps, workdir / "reference"),
        "ours": lambda: our_trainer(run, splits),
    }
    shipped = None
    if case.as_shipped and (config_tree(case.config).get("model") or {}).get("checkpoint") is None:
        shipped = our_run_config(case, checkpoint, data_dir, workdir / "shipped", compile, as_shipped=True)
        build["ours_as_shipped"] = lambda: our_trainer(shipped, splits)
    times: dict[str, list[float]] = {name: [] for name in build}
    data: dict[str, float] = {}
    profiles: dict[str, Any] = {}
    for round_ in range(case.rounds):
        for name in (list(build) if round_ % 2 == 0 else list(build)[::-1]):
            trainer = build[name]()
            times[name] += timed_steps(trainer, case.warmup)
            if name not in data:
                data[name] = data_seconds_per_batch(trainer, data_batches)
                if profile:
                    profiles[name] = op_profile(trainer.model, next(iter(input_loader(trainer))))
            del trainer
            gc.collect()
    result = training_result(case, case_encoder(case), run, times, data) | {"profile": profiles}
    if shipped is not None:
        result |= as_shipped_result(case, shipped, times)
    return result


def as_shipped_result(case: TrainCase, shipped: RunConfig, times: dict[str, list[float]]) -> dict[str, Any]:
    """Our side trained exactly as the config ships it (its own random-init model), vs the same reference."""
    speed = case.batch_size / statistics.median(times["ours_as_shipped"])
    reference = case.batch_size / statistics.median(times["reference"])
    return {"as_shipped_images_per_s": speed, "as_shipped_ratio": speed / reference,
            "as_shipped_step_times_s": times["ours_as_shipped"],
            "as_shipped_model": asdict(shipped.model.random_init_encoder()) | {"pooling": shipped.model.pooling}}


def training_result(case: TrainCase, encoder: EncoderConfig, run: RunConfig, times: dict[str, list[float]],
                    data: dict[str, float]) -> dict[str, Any]:
    """The JSON record of one comparison."""
    step = {name: statistics.median(seconds) for name, seconds in times.items()}
    speed = {name: case.batch_size / seconds for name, seconds in step.items()}
    args = build_training_arguments(run)
    return {
        "case": asdict(case), "encoder": asdict(encoder),
        "ours_images_per_s": speed["ours"], "reference_images_per_s": speed["reference"],
        "ratio": speed["ours"] / speed["reference"],
        "ours_step_s": step["ours"], "reference_step_s": step["reference"],
        "ours_data_s_per_batch": data["ours"], "reference_data_s_per_batch": data["reference"],
        "ours_step_times_s": times["ours"], "reference_step_times_s": times["reference"],
        "ours_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32", "reference_precision": "fp32",
        "ours_dataloader_num_workers": args.dataloader_num_workers, "reference_dataloader_num_workers": 0,
        "ours_augment": asdict(run.data.augment),
    }
