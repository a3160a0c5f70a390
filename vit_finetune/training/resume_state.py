"""Checks of a checkpoint's resume state against the run that resumes it, before any training step.

`check_resume_pickles` (trainer.py) makes sure the files hold only tensors and plain data; the checks here
make sure that data fits the run. A crafted or mismatched file is a `ResumeError` naming it (exit 2), never
a crash inside torch or the Trainer:

- `check_loaded_state`: optimizer, scheduler, scaler and RNG state have the structure the Trainer loads (each
  RNG state is restored on a new generator of its kind), checked before the run starts;
- `read_trainer_state`: trainer_state.json readable by this transformers release, its fields of the right types;
- `check_resume_labels`: the data set's classes are the checkpoint's (names and order);
- `read_error`: errors the Trainer raises while loading optimizer / scheduler state become `ResumeError`;
- `check_optimizer_state`: every loaded optimizer state tensor is a scalar or has its parameter's shape and
  dtype (the fused AdamW kernel reads moments of another shape out of bounds and kills the process);
- `ResumeProgressCheck` / `train_or_finish`: a step beyond the run is refused, and a checkpoint at the run's last
  step only finishes the run (final model, test metrics, run files) without training.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import TrainOutput

from vit_finetune.data.errors import check_labels
from vit_finetune.modeling.config import labels_from_json
from vit_finetune.modeling.convert import CheckpointError
from vit_finetune.modeling.hub import read_config_json
from vit_finetune.training.checkpoints import TRAINER_STATE, ResumeError
from vit_finetune.typed import error_reason, shown

logger = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
# Optimizers whose state is per element (each tensor a scalar or of its parameter's shape), with the keys
# each parameter's state must have once it has any.
ELEMENTWISE_STATE: dict[type, tuple[str, ...]] = {
    torch.optim.AdamW: ("step", "exp_avg", "exp_avg_sq"),
    torch.optim.Adam: ("step", "exp_avg", "exp_avg_sq"),
    torch.optim.SGD: (),
    torch.optim.RMSprop: ("step", "square_avg"),
    torch.optim.Adagrad: ("step", "sum"),
}
READ_ERRORS = (KeyError, IndexError, TypeError, ValueError, RuntimeError, EOFError, OSError)


def check_optimizer_state(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Refuse loaded optimizer state that does not fit the parameters (`ResumeError` naming `path`).

    Checked for the optimizers in `ELEMENTWISE_STATE`; others keep state of their own layout (e.g. Adafactor's
    factored moments) and are left to their own checks.
    """
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    required = ELEMENTWISE_STATE.get(type(optimizer))
    if required is None:
        return
    for group_index, group in enumerate(optimizer.param_groups):
        keys = required + (("max_exp_avg_sq",) if group.get("amsgrad") else ())
        for index, param in enumerate(group["params"]):
            state = optimizer.state.get(param) or {}
            problem = _state_problem(state, param, keys)
            if problem:
                raise ResumeError(f"{path}: optimizer state of parameter {index} in group {group_index} does not fit "
                                  f"this model: {problem}; the file belongs to another model or was altered")


def _state_problem(state: dict, param: torch.Tensor, keys: tuple[str, ...]) -> str | None:
    """What is wrong with one parameter's loaded state (None: nothing)."""
    missing = [key for key in keys if key not in state] if state else []
    if missing:
        return f"missing {missing}"
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        if key == "step":
            if value.numel() != 1 or value.is_complex():
                return f"step is a {value.dtype} tensor of shape {tuple(value.shape)}, expected one real number"
        elif value.shape != param.shape or value.dtype != param.dtype:
            return (f"{key} is {value.dtype} {tuple(value.shape)}, the parameter is {param.dtype} "
                    f"{tuple(param.shape)}")
    return None


@contextlib.contextmanager
def read_error(checkpoint: str | Path | None, files: str) -> Iterator[None]:
    """Turn an error raised while the Trainer loads `files` of `checkpoint` into a `ResumeError` naming them."""
    try:
        yield
    except READ_ERRORS as err:
        raise ResumeError(f"{checkpoint}: cannot resume from {files}: {error_reason(err)}") from err


# ---- the structure of optimizer.pt, scheduler.pt, scaler.pt and rng_state*.pth ------------------------------------

def check_loaded_state(path: Path, state: Any) -> None:
    """Refuse resume state (as `torch.load` read it from `path`) that the Trainer could not load into a run:
    a `ResumeError` naming the checkpoint and the file."""
    check = _rng_problem if path.name.startswith("rng_state") else STRUCTURE_CHECKS.get(path.name)
    problem = check(state) if check is not None else None
    if problem:
        raise ResumeError(f"{path.parent}: cannot resume from {path.name}: {problem}")


def _optimizer_problem(state: Any) -> str | None:
    if not isinstance(state, dict):
        return f"expected a dict of optimizer state, got a {type(state).__name__}"
    groups, per_parameter = state.get("param_groups"), state.get("state")
    if not isinstance(groups, list) or not isinstance(per_parameter, dict):
        return "expected 'state' (a dict) and 'param_groups' (a list)"
    ids = [group.get("params") if isinstance(group, dict) else None for group in groups]
    if not all(isinstance(params, list) and all(type(i) is int for i in params) for params in ids):
        return "each of param_groups must be a dict with 'params', a list of parameter numbers"
    unknown = sorted(set(per_parameter) - {i for params in ids for i in params}, key=str)
    if unknown:
        return f"state for parameters {shown(unknown)} that no parameter group holds"
    if not all(isinstance(value, dict) for value in per_parameter.values()):
        return "each parameter's state must be a dict"
    return None


def _scheduler_problem(state: Any) -> str | None:
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        return f"expected a dict of scheduler fields, got {shown(state)}"
    if "last_epoch" in state and type(state["last_epoch"]) is not int:
        return f"last_epoch is {shown(state['last_epoch'])}, expected an integer"
    for key in ("base_lrs", "_last_lr"):
        values = state.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
            return f"{key} is {shown(values)}, expected a list of numbers"
    return None


def _scaler_problem(state: Any) -> str | None:
    if not isinstance(state, dict) or not isinstance(state.get("scale", 1.0), (int, float)):
        return f"expected a dict of GradScaler fields, got {shown(state)}"
    return None


def _rng_problem(state: Any) -> str | None:
    """Each generator state is set on a new generator of its kind, as the Trainer will set the global ones."""
    if not isinstance(state, dict):
        return f"expected a dict of generator states, got a {type(state).__name__}"
    setters = {"python": random.Random().setstate, "numpy": np.random.RandomState().set_state,
               "cpu": torch.Generator().set_state}
    for key, set_state in setters.items():
        try:
            set_state(state[key])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            return f"the {key!r} generator state cannot be restored ({type(err).__name__}: {shown(str(err))})"
    return None


STRUCTURE_CHECKS = {OPTIMIZER_FILE: _optimizer_problem, SCHEDULER_FILE: _scheduler_problem,
                    "scaler.pt": _scaler_problem}


# ---- trainer_state.json, the run's classes and its progress ---------------------------------------------------

STATE_TYPES = {  # the TrainerState fields resuming relies on, and their JSON types
    "global_step": int, "max_steps": int, "epoch": (int, float, type(None)), "best_metric": (int, float, type(None)),
    "best_model_checkpoint": (str, type(None)), "best_global_step": (int, type(None)), "log_history": list,
}


class RunAlreadyComplete(Exception):
    """The resumed checkpoint is at the run's last step: there is nothing left to train."""


def read_trainer_state(checkpoint: Path) -> TrainerState:
    """`checkpoint`'s trainer_state.json as the Trainer will read it, checked; logs where the run resumes."""
    path = checkpoint / TRAINER_STATE
    try:
        state = TrainerState.load_from_json(str(path))
    except (OSError, ValueError) as err:  # JSON syntax errors are ValueErrors
        raise ResumeError(f"{path}: cannot read it: {' '.join(str(err).split())[:300]}") from None
    except TypeError as err:  # not a JSON object, or fields this transformers release does not know
        raise ResumeError(f"{path}: not a trainer state of transformers {transformers.__version__} ({err})") from None
    for name, kind in STATE_TYPES.items():
        value = getattr(state, name)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise ResumeError(f"{path}: {name} is {shown(value)}, expected {_type_names(kind)}")
    logger.info("resuming from %s (step %d)", checkpoint, state.global_step)
    return state


def _type_names(kind: type | tuple[type, ...]) -> str:
    names = [k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,))]
    return " or ".join("null" if name == "NoneType" else name for name in names) + (" >= 0" if kind is int else "")


def check_resume_labels(checkpoint: Path, label_names: list[str], dataset: str) -> None:
    """Refuse to resume `checkpoint` on a data set whose classes (names and order) are not the checkpoint's."""
    path = checkpoint / "config.json"
    try:
        id2label = labels_from_json(read_config_json(checkpoint).get("id2label") or {})
    except (AttributeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read id2label: {err}") from None
    check_labels([id2label[index] for index in sorted(id2label)], label_names, str(checkpoint), dataset)


class ResumeProgressCheck(TrainerCallback):
    """Before the first step of a resumed run: a step beyond the run is a `ResumeError`; the run's last step
    raises `RunAlreadyComplete` (the Trainer would otherwise train one step more before it stops)."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > state.max_steps:
            raise ResumeError(f"{self.checkpoint / TRAINER_STATE}: global_step {state.global_step} is beyond the "
                              f"{state.max_steps} steps this run trains (training.max_steps, or num_train_epochs at "
                              "this batch size and data set): resume with the settings that wrote it, or start over")
        if state.global_step == state.max_steps:
            logger.info("%s is at the last step of this run (%d): finishing it without training",
                        self.checkpoint.name, state.max_steps)
            raise RunAlreadyComplete


def train_or_finish(trainer: Trainer, resume_from: Path | None) -> TrainOutput:
    """`trainer.train()`, resuming `resume_from` if given; a checkpoint at the last step only finishes the run:
    the best model is loaded if the run keeps it, and nothing is trained."""
    if resume_from is None:
        return trainer.train()
    trainer.add_callback(ResumeProgressCheck(resume_from))
    try:
        return trainer.train(resume_from_checkpoint=str(resume_from))
    except RunAlreadyComplete:
        pass
    if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint is not None:
        trainer._load_best_model()
    trainer.control = trainer.callback_handler.on_train_end(trainer.args, trainer.state, trainer.control)
    trainer.is_in_train = False
    return TrainOutput(trainer.state.global_step, float("nan"), {})
