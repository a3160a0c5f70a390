"""`ClassifierTrainer`: the HF Trainer, saving and loading our model strictly, with atomic checkpoints.

Why a subclass: the stock Trainer saves a model that is not a `PreTrainedModel` as a bare state dict and
reloads it with `strict=False`, which silently drops any tensor whose name does not match (HF ViT
checkpoints in transformers 5 are one such case). Here every checkpoint is a complete model folder
(config.json, safetensors, preprocessor config) written by `save_classifier`, and every reload (resume,
best model at the end) goes through `load_classifier` and a strict `load_state_dict`. `training_step`
adds the non-finite-loss guard, and `_save` refuses non-finite weights (`check_finite_weights`);
`compute_loss` applies the training-step augmentations (random erasing, mixup / cutmix with soft targets)
and the class weights; `_get_train_sampler` adds the class-balanced sampler;
`_load_optimizer_and_scheduler` checks the loaded state against the parameters
(`resume_state.check_optimizer_state`); `_get_dataloader` makes loader workers ignore SIGINT / SIGTERM
(`signals.workers_ignore_signals`); `create_model_card` keeps the run's own model card for the Hub upload;
`get_train_dataloader` gives a streaming split its own per-process loader (`training/streaming.py`).
`FinetuneTrainerMixin` (`finetune_trainer.py`) adds the `finetune:` section's optimizer parameter groups,
EMA evaluation, selection and checkpoint file.
These are the only methods overridden; `tests/test_transformers_api.py`
records their signatures in the pinned transformers release.

Atomic checkpoints: the Trainer writes `checkpoint-N` where `_get_output_dir` says, which here is the
staging folder `output_dir/_incomplete/`. After the Trainer's save, `CheckpointPublisher.on_save` (a callback,
run on every process) waits for all processes' files, writes the `checkpoint_complete` marker and renames
the folder to `output_dir/checkpoint-N`; every process then records that final path as the best
checkpoint where the Trainer had recorded the staged one. A crash during a save leaves only the staging
folder, which no resume reads and the next run clears.

Resume state (optimizer, scheduler, scaler, RNG) is read by the Trainer with `torch.load(weights_only=True)`;
`check_resume_pickles` reads each file the same way before training starts, so that a pickle holding more
than tensors and plain data is a `ResumeError` naming the file.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import shutil
import zipfile
from pathlib import Path

import torch
from accelerate import PartialState
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import safe_globals
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from vit_finetune.data.batch_augment import augment_train_batch
from vit_finetune.data.config import AugmentConfig
from vit_finetune.data.sampling import BalancedSampler
from vit_finetune.finetune_config import FinetuneConfig
from vit_finetune.modeling.hub import load_classifier
from vit_finetune.training.checkpoints import (STAGING_DIR, TRAINER_STATE, ResumeError, list_checkpoints,
                                               publish_checkpoint)
from vit_finetune.training.durable_writes import publish_model_files
from vit_finetune.training.finetune_trainer import FinetuneTrainerMixin
from vit_finetune.training.losses import smooth_targets, soft_target_cross_entropy
from vit_finetune.training.resume_state import (OPTIMIZER_FILE, SCHEDULER_FILE, check_loaded_state,
                                                check_optimizer_state, read_error)
from vit_finetune.training.signals import workers_ignore_signals
from vit_finetune.training.streaming import is_stream, streaming_dataloader

logger = logging.getLogger(__name__)
RESUME_PICKLES = ("optimizer.pt", "scheduler.pt", "scaler.pt")  # besides rng_state*.pth


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class NonFiniteWeightsError(NonFiniteLossError):
    """An optimiser step made weights NaN or infinite (found before a save, which is then refused)."""


class TrainingOutOfMemoryError(RuntimeError):
    """The device ran out of memory while training; the message names the batch-size key."""


class ClassifierTrainer(FinetuneTrainerMixin, Trainer):
    """Trainer for `ImageClassifier` with strict checkpoint I/O, atomic checkpoints and a non-finite-loss guard;
    the `finetune:` methods come from `FinetuneTrainerMixin`."""

    def __init__(self, *args, preprocess_config=None, batch_augment: AugmentConfig | None = None,
                 finetune: FinetuneConfig | None = None, class_weights: torch.Tensor | None = None,
                 sampler: str = "random", **kwargs):
        super().__init__(*args, **kwargs)
        self.setup_finetune(finetune)  # parameter groups, EMA, LoRA files
        self.preprocess_config = preprocess_config
        self.batch_augment = batch_augment  # data.augment: random erasing, mixup / cutmix (training batches)
        self.class_weights = class_weights  # training.class_weights, (num_labels,) or None
        self.sampler = sampler  # data.sampler: "random" (the Trainer's) or "balanced"
        self.callback_handler.callbacks.insert(0, CheckpointPublisher())  # first: other callbacks see checkpoint-N

    def get_train_dataloader(self):
        """A streaming split reads its own shards in every process (`training/streaming.py`)."""
        if is_stream(self.train_dataset):
            return streaming_dataloader(self)
        return super().get_train_dataloader()

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            step = self.state.global_step + 1
            raise NonFiniteLossError(f"non-finite loss at step {step} ({loss.item()}); "
                                     "the last good checkpoint is left untouched")
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Training batches get the training-step augmentations first (`data/batch_augment.py`). Soft targets
        (mixup / cutmix, `data.augment.label_smoothing`) and `training.class_weights` are trained with
        `losses.soft_target_cross_entropy`, smoothed by `training.label_smoothing_factor`; class ids without
        class weights keep the model's cross-entropy (or the Trainer's label smoothing). Evaluation batches
        are never augmented."""
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        num_labels = self.model.config.num_labels
        if self.batch_augment is not None:
            inputs = augment_train_batch(inputs, num_labels, self.batch_augment)
        multi_hot = self.model.config.multi_label  # the model's sigmoid BCE (config refuses mixing for it)
        if multi_hot or (inputs["labels"].ndim == 1 and self.class_weights is None):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        targets = smooth_targets(inputs.pop("labels"), num_labels, self.args.label_smoothing_factor)
        outputs = model(**inputs)
        loss = soft_target_cross_entropy(outputs.logits.float(), targets, self.class_weights)
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        """`data.sampler: balanced` draws class-balanced batches (`data/sampling.py`), seeded by `data_seed` or `seed`."""
        if self.sampler != "balanced":
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return BalancedSampler(dataset.labels, seed)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        output_dir = Path(output_dir or self.args.output_dir)
        check_finite_weights(self.accelerator.unwrap_model(self.model), self.state.global_step)
        if output_dir.parent.name == STAGING_DIR:  # a checkpoint: `CheckpointPublisher` completes it
            self._write_model(output_dir)
        else:  # the final model, among the run's files: staged, flushed, moved in with the weights last
            publish_model_files(output_dir, output_dir / STAGING_DIR / "model", self._write_model)

    def _write_model(self, folder: Path) -> None:
        self.save_model_files(folder)
        if self.preprocess_config is not None:
            self.preprocess_config.save_pretrained(folder)

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False,
                        dataloader_key=None) -> DataLoader:
        """The Trainer's loader, whose worker processes leave SIGINT / SIGTERM to this one (see `signals.py`)."""
        loader = super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        iterated = getattr(loader, "base_dataloader", loader)  # accelerate's adapter iterates the loader it wraps
        iterated.worker_init_fn = workers_ignore_signals(iterated.worker_init_fn)
        return loader

    def _get_output_dir(self, trial) -> str:
        """The folder the Trainer writes `checkpoint-N` into: the staging folder (see `CheckpointPublisher`)."""
        return str(Path(super()._get_output_dir(trial)) / STAGING_DIR)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        self.load_model_files(model or self.model, Path(resume_from_checkpoint), load_weights_strictly)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """The Trainer's load, its errors as a `ResumeError`, then the state checked against the parameters."""
        with read_error(checkpoint, f"{OPTIMIZER_FILE} / {SCHEDULER_FILE}"):
            super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            check_optimizer_state(self.optimizer, Path(checkpoint) / OPTIMIZER_FILE)

    def create_model_card(self, **kwargs) -> None:
        """Keep the run's own card: `train()` writes `README.md` (`model_card.py`) before the Hub upload, which
        calls this; the Trainer's draft (`TrainingSummary`) would replace it with a card that knows no test
        accuracy, data set or base model of this pipeline."""

    def _load_best_model(self) -> None:
        logger.info("loading best model from %s (score %s)", self.state.best_model_checkpoint,
                    self.state.best_metric)
        self.load_model_files(self.model, Path(self.state.best_model_checkpoint), load_weights_strictly)


class CheckpointPublisher(TrainerCallback):
    """Completes each checkpoint the Trainer wrote into `output_dir/_incomplete/`: marker, rename, rotation.

    Runs on every process. All processes wait until each has written its files (every process writes its
    own RNG state), the saving process marks the folder complete, renames it to `output_dir/checkpoint-N`
    and deletes checkpoints beyond `save_total_limit`, and all wait again before training goes on.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        if args.should_save:  # a crashed save's leftovers; nothing reads them
            shutil.rmtree(Path(args.output_dir) / STAGING_DIR, ignore_errors=True)

    def on_save(self, args, state, control, **kwargs):
        output_dir = Path(args.output_dir)
        name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        staged, final = output_dir / STAGING_DIR / name, output_dir / name
        if state.best_model_checkpoint == str(staged):  # the same value on every process
            state.best_model_checkpoint = str(final)
            if args.should_save:
                state.save_to_json(str(staged / TRAINER_STATE))
        PartialState().wait_for_everyone()
        if args.should_save:
            publish_checkpoint(staged, final)
            shutil.rmtree(staged.parent, ignore_errors=True)
            rotate_checkpoints(output_dir=str(output_dir), save_total_limit=args.save_total_limit,
                               best_model_checkpoint=state.best_model_checkpoint, use_mtime=True)
        PartialState().wait_for_everyone()

    def on_train_end(self, args, state, control, **kwargs):
        """`save_total_limit: 1` keeps only the best checkpoint once training ends (as the stock Trainer does)."""
        if args.should_save and args.save_total_limit == 1 and state.best_model_checkpoint is not None:
            for folder in list_checkpoints(Path(args.output_dir)):
                if folder != Path(state.best_model_checkpoint):
                    shutil.rmtree(folder, ignore_errors=True)


def check_resume_pickles(checkpoint: Path) -> None:
    """Read `checkpoint`'s optimizer, scheduler, scaler and RNG files as the Trainer will (`weights_only=True`);
    a file holding anything else (possibly crafted), a damaged one, or one of another structure than the Trainer
    loads (`resume_state.check_loaded_state`) is a `ResumeError` naming it. Nothing in it runs."""
    for path in [checkpoint / name for name in RESUME_PICKLES] + sorted(checkpoint.glob("rng_state*.pth")):
        if not path.is_file():
            continue
        try:  # numpy arrays are allowed in RNG state only, as the Trainer does
            with safe_globals() if path.name.startswith("rng_state") else contextlib.nullcontext():
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError as err:
            raise ResumeError(f"{checkpoint}: refused to load {path.name}: not plain tensors and data, "
                              f"possibly a crafted file ({first_line(err)})") from None
        except (RuntimeError, EOFError, OSError, ValueError) as err:  # damaged: torch's zip reader, a cut pickle
            raise ResumeError(f"{checkpoint}: cannot read {path.name}: {first_line(err)}") from None
        check_loaded_state(path, state)


def check_finite_weights(model: torch.nn.Module, step: int) -> None:
    """Raise `NonFiniteWeightsError` if any parameter holds NaN or inf: such weights are never saved.

    A step with a finite loss can still produce them (a learning rate far too high), and the loss guard sees
    that only one step later, after a checkpoint may have been written. Once per save; the minimum and maximum
    of a tensor are NaN or infinite exactly when one of its values is, and `aminmax` finds them in a tenth of
    the time `isfinite` takes (B/16's 86 M parameters: 0.3-1 s against 4-5 s on a busy 2-core CPU), small
    next to writing the checkpoint.
    """
    bad = [name for name, parameter in model.named_parameters()
           if not torch.isfinite(torch.stack(parameter.detach().aminmax())).all()]
    if bad:
        raise NonFiniteWeightsError(f"non-finite weights after step {step} (in {len(bad)} tensor(s), e.g. {bad[0]}): "
                                    "not saved; the last good checkpoint is left untouched")


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error message (the exception's type if it has none)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def load_weights_strictly(model: torch.nn.Module, folder: Path) -> None:
    """Copy the weights saved in `folder` into `model`; every tensor must match by name and shape."""
    target = model.module if hasattr(model, "module") else model
    saved = load_classifier(folder)
    try:
        target.load_state_dict(saved.state_dict(), strict=True)
    except RuntimeError as err:  # torch lists every missing, unexpected and mis-shaped tensor
        reason = "; ".join(line.strip() for line in str(err).splitlines()[1:4])
        raise ResumeError(f"{folder}: its weights do not fit this run's model (were model settings changed since it "
                          f"was written?): {reason}") from None
