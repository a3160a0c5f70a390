"""`FinetuneTrainerMixin`: the Trainer methods of the `finetune:` section, mixed into `ClassifierTrainer`.

- `create_optimizer`: the optimizer over the parameter groups of `training/finetune.py` (weight-decay
  filter, layer-wise learning rates), with the class and arguments `training.optim` gives the Trainer.
- `evaluation_loop`: with an EMA (`training/ema.py`), the averaged weights are evaluated after the live
  ones into the same metrics (`eval_ema_accuracy`, ...); `_determine_best_metric` scores a checkpoint by
  the better of the two; `_save_checkpoint` adds `ema.safetensors` to each checkpoint.
- `use_better_weights`: after training, the final model is the better of the live and averaged weights.
- `save_model_files` / `load_model_files`: a LoRA run's folder holds the merged model and the adapter.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from transformers.trainer_optimizer import is_optimizer_factory
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from vit_finetune.finetune_config import FinetuneConfig
from vit_finetune.modeling.hub import save_classifier
from vit_finetune.training.ema import (EMA_FILE, EMA_PREFIX, EmaUpdate, ModelEma, better_of_live_and_ema,
                                       ema_scored_better)
from vit_finetune.training.finetune import describe_groups, param_groups
from vit_finetune.training.lora import load_lora_weights, save_lora_model
from vit_finetune.typed import ConfigError

logger = logging.getLogger(__name__)


class FinetuneTrainerMixin:
    """Parameter groups, EMA and LoRA files for a `transformers.Trainer` subclass (see the module docstring)."""

    def setup_finetune(self, finetune: FinetuneConfig | None) -> None:
        """Call after `Trainer.__init__`: keeps the settings and starts the EMA of the model's trainable weights."""
        self.finetune = finetune or FinetuneConfig()
        self.ema: ModelEma | None = None
        if self.finetune.ema_decay is not None:
            self.ema = ModelEma(self.model, self.finetune.ema_decay, self.finetune.ema_warmup)
            self.add_callback(EmaUpdate(self.ema))

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The optimizer over `finetune`'s parameter groups; optimizers that build their own groups (factories,
        `optim: ...` taking the model) get the Trainer's, and refuse `layer_decay`."""
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            if is_optimizer_factory(optimizer_cls) or {"params", "model", "optimizer_dict"} & set(kwargs):
                if self.finetune.layer_decay is not None:
                    raise ConfigError(f"finetune.layer_decay: not available with training.optim={self.args.optim}")
                return super().create_optimizer(model)
            groups = param_groups(opt_model, self.finetune, self.args.weight_decay, kwargs.get("lr"))
            logger.info(describe_groups(groups))
            self.optimizer = optimizer_cls(groups, **kwargs)
        return super().create_optimizer(model)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        """With an EMA, the averaged weights are evaluated too, into the same metrics (`eval_ema_accuracy`, ...)."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        if self.ema is not None:
            with self.ema.applied():
                averaged = super().evaluation_loop(dataloader, f"{description} (EMA)", prediction_loss_only,
                                                   ignore_keys, f"{metric_key_prefix}_{EMA_PREFIX}")
            output.metrics.update(averaged.metrics)
        return output

    def _determine_best_metric(self, metrics, trial) -> bool:
        """With an EMA, a checkpoint is scored by the better of its live and averaged weights."""
        if self.ema is not None and self.args.metric_for_best_model is not None:
            key = self.best_metric_key()
            metrics = {**metrics, key: better_of_live_and_ema(metrics, key, self.args.greater_is_better)}
        return super()._determine_best_metric(metrics, trial)

    def best_metric_key(self) -> str:
        """`metric_for_best_model` as the Trainer reads it from the evaluation metrics (`eval_accuracy`)."""
        name = self.args.metric_for_best_model
        return name if name.startswith("eval_") else f"eval_{name}"

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, plus the averaged weights (`ema.safetensors`) when there is an EMA."""
        super()._save_checkpoint(model, trial)
        if self.ema is not None and self.args.should_save:
            folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self.ema.save(folder / EMA_FILE)

    def save_model_files(self, folder: Path) -> None:
        """The trained model in `folder`: HF-native weights; for LoRA merged, with the adapter in `adapter/`."""
        model = self.accelerator.unwrap_model(self.model)
        if self.finetune.method == "lora":
            save_lora_model(model, folder)
        else:
            save_classifier(model, folder)

    def load_model_files(self, model: torch.nn.Module, folder: Path,
                         load_weights: Callable[[torch.nn.Module, Path], None]) -> None:
        """The weights of checkpoint `folder`, strictly: `load_weights` for a plain model, the adapter on its
        base for LoRA, then the averaged weights when there is an EMA."""
        if self.finetune.method == "lora":
            load_lora_weights(self.accelerator.unwrap_model(model), folder)
        else:
            load_weights(model, folder)
        if self.ema is not None:
            self.ema.load(folder / EMA_FILE)

    def use_better_weights(self) -> str:
        """After training: keep the live weights or put the EMA in their place, whichever scored better on the
        validation split at the step the model holds (evaluated now if that step was not). Returns which."""
        if self.ema is None or self.eval_dataset is None:
            return "live"
        step = self.state.best_global_step if self.args.load_best_model_at_end else self.state.global_step
        key = self.best_metric_key() if self.args.metric_for_best_model else "eval_loss"
        logged = [entry for entry in self.state.log_history if entry.get("step") == step and key in entry]
        metrics = logged[-1] if logged else self.evaluate()
        greater_is_better = self.args.greater_is_better if self.args.metric_for_best_model else False
        choice = "ema" if ema_scored_better(metrics, key, greater_is_better) else "live"
        if choice == "ema":
            self.ema.copy_to_model()
        self.ema = None  # from here on the model is the final one (the test evaluation measures it alone)
        return choice
