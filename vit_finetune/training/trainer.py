"""`ClassifierTrainer`: the HF Trainer, saving and loading our model strictly and stopping on NaN.

Why a subclass: the stock Trainer saves a plain `nn.Module` as a bare state dict and reloads it with
`strict=False`, which silently drops any tensor whose name does not match (see the brief's pitfall
with HF ViT checkpoints in transformers 5). Here every checkpoint is a complete model folder
(config.json, safetensors, preprocessor config) written by `save_classifier`, and every reload goes
through `load_classifier` and a strict `load_state_dict`.

Checkpoints are atomic: the Trainer writes `checkpoint-N` inside the hidden `output_dir/.incomplete/`
(its output folder points there during the save), the completion marker is written last, and only
then is the folder renamed to `output_dir/checkpoint-N`. Resume state (optimizer, scheduler, RNG) is
read by the Trainer with `torch.load(weights_only=True)`; a pickle that holds more is a `ResumeError`.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from vit_finetune.modeling.hub import load_classifier, save_classifier
from vit_finetune.training.checkpoints import STAGING_DIR, ResumeError, publish_checkpoint

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class TrainingOutOfMemoryError(RuntimeError):
    """The device ran out of memory while training; the message names the batch-size key."""


class ClassifierTrainer(Trainer):
    """Trainer for `ImageClassifier` with strict, atomic checkpoint I/O and a non-finite-loss guard."""

    def __init__(self, *args, preprocess_config=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.preprocess_config = preprocess_config
        self._staging = False  # True while a checkpoint is being written (see _get_output_dir)

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            step = self.state.global_step + 1
            raise NonFiniteLossError(f"non-finite loss at step {step} ({loss.item()}); "
                                     "the last good checkpoint is left untouched")
        return loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        output_dir = Path(output_dir or self.args.output_dir)
        save_classifier(self.accelerator.unwrap_model(self.model), output_dir)
        if self.preprocess_config is not None:
            self.preprocess_config.save_pretrained(output_dir)

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return str(Path(run_dir) / STAGING_DIR) if self._staging else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        """The stock save into `.incomplete/checkpoint-N`, then marker and rename to `checkpoint-N`."""
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = run_dir / STAGING_DIR / name, run_dir / name
        if self.args.should_save:
            shutil.rmtree(staged.parent, ignore_errors=True)  # what a crashed save left behind
        self.accelerator.wait_for_everyone()  # every process writes its RNG state into `staged`
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            self._publish(staged, final)
        self.accelerator.wait_for_everyone()

    def _publish(self, staged: Path, final: Path) -> None:
        """Point the Trainer state at `final` instead of `staged`, rename, then rotate old checkpoints."""
        if self.state.best_model_checkpoint == str(staged):
            self.state.best_model_checkpoint = str(final)
            if (staged / "trainer_state.json").is_file():
                self.state.save_to_json(str(staged / "trainer_state.json"))
        publish_checkpoint(staged, final)
        shutil.rmtree(staged.parent, ignore_errors=True)
        rotate_checkpoints(output_dir=str(final.parent), save_total_limit=self.args.save_total_limit,
                           best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        with refusing_unsafe_pickles(checkpoint, "optimizer.pt / scheduler.pt"):
            super()._load_optimizer_and_scheduler(checkpoint)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        with refusing_unsafe_pickles(checkpoint, "rng_state*.pth"):
            super()._load_rng_state(checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_weights_strictly(model or self.model, Path(resume_from_checkpoint))

    def _load_best_model(self) -> None:
        logger.info("loading best model from %s (score %s)", self.state.best_model_checkpoint,
                    self.state.best_metric)
        load_weights_strictly(self.model, Path(self.state.best_model_checkpoint))


@contextlib.contextmanager
def refusing_unsafe_pickles(checkpoint: str | None, files: str) -> Iterator[None]:
    """Turn the Trainer's refused `torch.load(weights_only=True)` into a `ResumeError` naming the files."""
    try:
        yield
    except pickle.UnpicklingError as err:
        raise ResumeError(f"{checkpoint}: refused to load {files}: not plain tensors and data, "
                          f"possibly a crafted file ({first_line(err)})") from None


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error message (the exception's type if it has none)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def load_weights_strictly(model: torch.nn.Module, folder: Path) -> None:
    """Copy the weights saved in `folder` into `model`; every tensor must match by name and shape."""
    target = model.module if hasattr(model, "module") else model
    saved = load_classifier(folder)
    target.load_state_dict(saved.state_dict(), strict=True)
