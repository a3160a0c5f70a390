"""Checks of a checkpoint's resume state against the run that resumes it, before any training step.

`check_resume_pickles` (trainer.py) makes sure the files hold only tensors and plain data; the checks here
make sure that data fits the run. A crafted or mismatched file is a `ResumeError` naming it (exit 2),
never a crash inside torch:

- `check_optimizer_state`: every loaded optimizer state tensor is a scalar or has its parameter's shape and
  dtype (the fused AdamW kernel reads moments of another shape out of bounds and kills the process);
- `read_error`: errors the Trainer raises while loading optimizer / scheduler state become `ResumeError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from vit_finetune.training.checkpoints import ResumeError

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
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise ResumeError(f"{checkpoint}: cannot resume from {files}: {reason}") from err
