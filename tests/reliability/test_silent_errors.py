"""Runs that used to end with exit 0 but wrong: a resume that picked an earlier run's checkpoint, a resume onto
other class names, a checkpoint of non-finite weights called "the last good checkpoint", a resume from a step
the run cannot have reached, and a resume after the last checkpoint that trained one step too many."""

import json
import logging
import math
import shutil

import torch
from transformers import TrainerCallback

from data_helpers import make_image_folder
from train_helpers import weights
from vit_finetune.commands import EXIT_NON_FINITE_LOSS, EXIT_USER_ERROR
from vit_finetune.run_files import METRICS
from vit_finetune.training.checkpoints import TRAINER_STATE
from vit_finetune.training.trainer import ClassifierTrainer

from .helpers import (STEPS_PER_EPOCH, add_callback, assert_same_weights, checkpoint_steps, copy_checkpoint,
                      message_line, run_tree, train_cli, train_tree)

LAST = 2 * STEPS_PER_EPOCH


class CrashAtStep(TrainerCallback):
    """Raises (a stand-in for a crash or kill -9) at the end of optimiser step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"crash at step {self.step}")


def record_resumes(monkeypatch) -> list[str]:
    """The checkpoint paths `ClassifierTrainer` resumes from, in order."""
    resumed_from = []
    load = ClassifierTrainer._load_from_checkpoint
    monkeypatch.setattr(ClassifierTrainer, "_load_from_checkpoint",
                        lambda self, path, model=None: resumed_from.append(path) or load(self, path, model))
    return resumed_from


def test_overwrite_then_crash_resumes_the_new_runs_checkpoint(reference, data_dir, tmp_path, monkeypatch, caplog):
    """An earlier run's checkpoint-10 must not be resumed by the run that overwrote the folder (another seed)."""
    output_dir = tmp_path / "run"
    shutil.copytree(reference, output_dir)  # the earlier run: checkpoint-5, checkpoint-10, final model
    tree = run_tree(data_dir, output_dir, seed=1, overwrite_output_dir=True)
    add_callback(monkeypatch, CrashAtStep(STEPS_PER_EPOCH + 2))
    try:
        train_tree(tree)
    except RuntimeError as crash:
        assert "crash at step" in str(crash)
    assert checkpoint_steps(output_dir) == [STEPS_PER_EPOCH]  # the new run's only checkpoint

    monkeypatch.undo()
    resumed_from = record_resumes(monkeypatch)
    with caplog.at_level(logging.INFO):
        train_tree(run_tree(data_dir, output_dir, seed=1, overwrite_output_dir=True, resume_from_checkpoint=True))
    assert resumed_from == [str(output_dir / f"checkpoint-{STEPS_PER_EPOCH}")]
    assert f"resuming from {output_dir / f'checkpoint-{STEPS_PER_EPOCH}'} (step {STEPS_PER_EPOCH})" in caplog.text


def test_resume_onto_other_class_names_exits_2_listing_both(reference, tmp_path, capsys):
    other = make_image_folder(tmp_path / "animals", classes=("cat", "dog", "fish", "owl"), per_class=12)
    output_dir = tmp_path / "run"
    copy_checkpoint(reference / f"checkpoint-{STEPS_PER_EPOCH}", output_dir)
    assert train_cli(run_tree(other, output_dir, resume_from_checkpoint=True), tmp_path / "c.yaml") == EXIT_USER_ERROR
    line = message_line(capsys.readouterr().err)
    assert "['red', 'green', 'blue', 'yellow']" in line or "['blue', 'green', 'red', 'yellow']" in line
    assert "['cat', 'dog', 'fish', 'owl']" in line and f"checkpoint-{STEPS_PER_EPOCH}" in line
    assert checkpoint_steps(output_dir) == [STEPS_PER_EPOCH]


def test_non_finite_weights_are_never_published(data_dir, tmp_path, capsys):
    """Step 1's loss is finite; its update (the largest finite learning rate) makes weights infinite. The
    checkpoint of step 1 is refused (exit 3 naming the step) instead of being saved as the last good one."""
    output_dir = tmp_path / "run"
    tree = run_tree(data_dir, output_dir, learning_rate=3e38, weight_decay=0.5, max_grad_norm=0.0,
                    lr_scheduler_type="constant", max_steps=3, save_strategy="steps", save_steps=1,
                    eval_strategy="no", load_best_model_at_end=False)
    assert train_cli(tree, tmp_path / "inf.yaml") == EXIT_NON_FINITE_LOSS
    line = message_line(capsys.readouterr().err)
    assert line.startswith("error: non-finite weights after step 1 ") and "not saved" in line
    assert checkpoint_steps(output_dir) == [] and not (output_dir / "model.safetensors").exists()


def test_step_beyond_the_run_exits_2_naming_the_file(reference, data_dir, tmp_path, capsys):
    output_dir = tmp_path / "run"
    checkpoint = copy_checkpoint(reference / f"checkpoint-{STEPS_PER_EPOCH}", output_dir)
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    (checkpoint / TRAINER_STATE).write_text(json.dumps(state | {"global_step": 10**12}))
    assert train_cli(run_tree(data_dir, output_dir, resume_from_checkpoint=True), tmp_path / "c.yaml") == EXIT_USER_ERROR
    line = message_line(capsys.readouterr().err)
    assert line.startswith(f"error: {checkpoint / TRAINER_STATE}: global_step 1000000000000 ")
    assert f"{LAST} steps" in line
    assert not (output_dir / "model.safetensors").exists()


def test_resume_from_the_last_checkpoint_finishes_without_training(data_dir, tmp_path, monkeypatch, caplog):
    """Killed after its last checkpoint (step 7 of 7, mid-epoch), the run resumed trained step 8; now it only
    writes the final model, test metrics and run files."""
    output_dir = tmp_path / "run"
    tree = run_tree(data_dir, output_dir, max_steps=7, save_strategy="steps", save_steps=7, eval_strategy="steps",
                    eval_steps=7)
    train_tree(tree)
    finished = {path.name: path.read_bytes() for path in output_dir.iterdir() if path.is_file()}
    for name in finished:
        (output_dir / name).unlink()  # as if killed before the final model was written
    trained = []
    monkeypatch.setattr(ClassifierTrainer, "training_step", lambda *args, **kwargs: trained.append(1))
    with caplog.at_level(logging.INFO):
        result = train_tree({**tree, "training": {**tree["training"], "resume_from_checkpoint": True}})
    assert trained == [] and checkpoint_steps(output_dir) == [7]
    assert "checkpoint-7 is at the last step of this run (7): finishing it without training" in caplog.text
    assert_same_weights(output_dir / "checkpoint-7", output_dir)
    assert weights(output_dir).keys() and {"config.json", METRICS} <= {p.name for p in output_dir.iterdir()}
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0 and math.isfinite(result.metrics["test_accuracy"])
    assert json.loads((output_dir / METRICS).read_text())["test_accuracy"] == result.metrics["test_accuracy"]
    assert all(torch.isfinite(tensor).all() for tensor in weights(output_dir).values())
