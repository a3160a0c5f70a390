"""`ClassifierTrainer`: the HF Trainer, saving and loading our model strictly and stopping on NaN.

Why a subclass: the stock Trainer saves a plain `nn.Module` as a bare state dict and reloads it with
`strict=False`, which silently drops any tensor whose name does not match (see the brief's pitfall
with HF ViT checkpoints in transformers 5). Here every checkpoint is a complete model folder
(config.json, safetensors, preprocessor config) written by `save_classifier`, and every reload goes
through `load_classifier` and a strict `load_state_dict`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import Trainer

from vit_finetune.modeling.hub import load_classifier, save_classifier
from vit_finetune.training.checkpoints import COMPLETE_MARKER

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class ClassifierTrainer(Trainer):
    """Trainer for `ImageClassifier` with strict checkpoint I/O and a non-finite-loss guard."""

    def __init__(self, *args, preprocess_config=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.preprocess_config = preprocess_config

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

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
            (folder / COMPLETE_MARKER).write_text("complete\n")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_weights_strictly(model or self.model, Path(resume_from_checkpoint))

    def _load_best_model(self) -> None:
        logger.info("loading best model from %s (score %s)", self.state.best_model_checkpoint,
                    self.state.best_metric)
        load_weights_strictly(self.model, Path(self.state.best_model_checkpoint))


def load_weights_strictly(model: torch.nn.Module, folder: Path) -> None:
    """Copy the weights saved in `folder` into `model`; every tensor must match by name and shape."""
    target = model.module if hasattr(model, "module") else model
    saved = load_classifier(folder)
    target.load_state_dict(saved.state_dict(), strict=True)
