"""Resume state that is valid pickle data but wrong for the run: Adam state of other shapes (which the fused
AdamW kernel would read out of bounds), damaged or restructured optimizer / scheduler / RNG / trainer state,
steps outside what the run could reach. Each is refused before a training step, naming the file (exit 2)."""

import re

import pytest
import torch

from vit_finetune.commands import EXIT_USER_ERROR
from vit_finetune.training.checkpoints import ResumeError
from vit_finetune.training.resume_state import check_optimizer_state

from .helpers import STEPS_PER_EPOCH, copy_checkpoint, message_line, run_tree, train_subprocess


def mis_shaped_adam_state(path):
    """The checkpoint's optimizer.pt with every Adam moment replaced by a tensor of 3 elements."""
    state = torch.load(path, weights_only=True)
    for moments in state["state"].values():
        moments["exp_avg"], moments["exp_avg_sq"] = torch.zeros(3), torch.zeros(3)
    torch.save(state, path)


def test_mis_shaped_optimizer_state_exits_2_naming_the_file(reference, data_dir, tmp_path):
    """In a fresh process: the unchecked state crashed the interpreter in the fused AdamW kernel (exit 139)."""
    output_dir = tmp_path / "run"
    checkpoint = copy_checkpoint(reference / f"checkpoint-{STEPS_PER_EPOCH}", output_dir)
    mis_shaped_adam_state(checkpoint / "optimizer.pt")
    done = train_subprocess(run_tree(data_dir, output_dir, resume_from_checkpoint=True), tmp_path / "c.yaml")
    assert done.returncode == EXIT_USER_ERROR, (done.returncode, done.stderr[-3000:])
    line = message_line(done.stderr)
    assert line.startswith(f"error: {checkpoint / 'optimizer.pt'}: ") and "exp_avg" in line and "(3,)" in line
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == [checkpoint.name]  # nothing trained


def _moments_of_shape(state):
    state["state"][0]["exp_avg"] = torch.zeros(2, 2)


def _step_vector(state):
    state["state"][0]["step"] = torch.zeros(5)


def _moment_missing(state):
    del state["state"][1]["exp_avg_sq"]


CRAFTED_OPTIMIZER_STATE = {
    "moment of another shape": (_moments_of_shape, "exp_avg is torch.float32 (2, 2), the parameter is torch.float32 (4,)"),
    "step as a vector": (_step_vector, "step is a torch.float32 tensor of shape (5,), expected one real number"),
    "moment missing": (_moment_missing, "missing ['exp_avg_sq']"),
}


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("case", CRAFTED_OPTIMIZER_STATE)
def test_loaded_optimizer_state_is_checked_against_the_parameters(tmp_path, case, fused):
    """The check runs after `load_state_dict` (which keeps shapes as they are) and before any step."""
    params = [torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(3, 2))]
    trained = torch.optim.AdamW(params, fused=fused)
    sum(p.sum() for p in params).backward()
    trained.step()
    state = trained.state_dict()
    check_optimizer_state(trained, tmp_path / "optimizer.pt")  # the genuine state passes
    spoil, fragment = CRAFTED_OPTIMIZER_STATE[case]
    spoil(state)
    resumed = torch.optim.AdamW(params, fused=fused)
    resumed.load_state_dict(state)
    with pytest.raises(ResumeError, match=rf"^{re.escape(str(tmp_path / 'optimizer.pt'))}: .*{re.escape(fragment)}"):
        check_optimizer_state(resumed, tmp_path / "optimizer.pt")
