"""An exponential moving average of the weights (timm's `ModelEmaV3`), updated after every optimizer step.

    ema = ema + (1 - decay(step)) * (weights - ema)      decay(1) = 0: the first update copies the weights
    decay(step) = min(ema_decay, 1 - step ** (-2/3))     step >= 2, with the warm-up (timm: gamma 1, power 2/3)
    decay(step) = ema_decay                              step >= 2, without it

`step` is the Trainer's `global_step` after the optimizer step (timm's `num_updates`), so gradient
accumulation counts optimizer steps and a resumed run continues the same schedule. The average is kept in
fp32 on the parameters' device, for the trainable parameters only: frozen ones never change, so their
average is themselves (timm averages every tensor; the result is the same). Evaluation swaps the averaged
weights into the model and the live ones back, bitwise. Checkpoints hold it as `ema.safetensors`, by the
parameters' names in the trained model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback

from vit_finetune.training.checkpoints import ResumeError

EMA_FILE = "ema.safetensors"
EMA_PREFIX = "ema"  # evaluation metrics of the averaged weights: eval_ema_accuracy, ...
WARMUP_POWER = 2 / 3  # timm ModelEmaV3 defaults (warmup_gamma 1)


class ModelEma:
    """The moving average of `model`'s trainable parameters (see the module docstring)."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.decay, self.warmup = decay, warmup
        self.shadow = [p.detach().float().clone() for p in self.params]

    def decay_at(self, step: int) -> float:
        """timm's `ModelEmaV3.get_decay(step)`: 0 at the first update, then warmed up towards `decay`."""
        if step <= 1:
            return 0.0
        return min(self.decay, 1.0 - step ** -WARMUP_POWER) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the current weights after optimizer step `step`."""
        weight = 1.0 - self.decay_at(step)
        for average, parameter in zip(self.shadow, self.params):
            average.lerp_(parameter.detach().float(), weight)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the block; the live ones restored afterwards, bitwise."""
        live = [p.detach().clone() for p in self.params]
        self.copy_to_model()
        try:
            yield
        finally:
            _copy(self.params, live)

    def copy_to_model(self) -> None:
        """Put the averaged weights into the model for good (the final model when they scored better)."""
        _copy(self.params, self.shadow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: average.detach().cpu().contiguous() for name, average in zip(self.names, self.shadow)}

    def save(self, path: Path) -> None:
        save_file(self.state_dict(), str(path), metadata={"format": "pt"})

    def load(self, path: Path) -> None:
        """Restore a saved average exactly; every trainable parameter must be there by name and shape."""
        saved = load_file(str(path))
        expected = {name: average.shape for name, average in zip(self.names, self.shadow)}
        found = {name: tensor.shape for name, tensor in saved.items()}
        if found != expected:
            missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
            raise ResumeError(f"{path}: the averaged weights do not match the model's trainable parameters "
                              f"(missing {missing}, unexpected {unexpected}, or other shapes)")
        with torch.no_grad():
            for name, average in zip(self.names, self.shadow):
                average.copy_(saved[name])


def _copy(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for target, source in zip(targets, sources):
            target.copy_(source)


class EmaUpdate(TrainerCallback):
    """Updates the average after every optimizer step (`on_step_end` runs once per accumulated step)."""

    def __init__(self, ema: ModelEma):
        self.ema = ema

    def on_step_end(self, args, state, control, **kwargs):
        self.ema.update(state.global_step)


def ema_metric_key(key: str) -> str:
    """`eval_accuracy` -> `eval_ema_accuracy`: the same metric of the averaged weights."""
    prefix, _, name = key.partition("_")
    return f"{prefix}_{EMA_PREFIX}_{name}"


def better_of_live_and_ema(metrics: dict[str, float], key: str, greater_is_better: bool) -> float:
    """The score a checkpoint is selected by when it holds both: the better of `key` and its EMA twin."""
    live, average = metrics[key], metrics[ema_metric_key(key)]
    return max(live, average) if greater_is_better else min(live, average)


def ema_scored_better(metrics: dict[str, float], key: str, greater_is_better: bool) -> bool:
    """Whether the averaged weights beat the live ones on `key` (a tie keeps the live weights)."""
    live, average = metrics[key], metrics[ema_metric_key(key)]
    return average > live if greater_is_better else average < live
