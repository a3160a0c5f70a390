"""Failures that stop a run: non-finite loss (exit 3), out of memory (exit 4, naming the batch-size
key; `auto_find_batch_size` passes through), and a second run in the same output directory (exit 2)."""

import logging
import subprocess
import sys

import pytest
import torch

from train_helpers import weights
from vit_finetune.commands import EXIT_NON_FINITE_LOSS, EXIT_OUT_OF_MEMORY, EXIT_USER_ERROR
from vit_finetune.config import load_run_config, run_config_from_dict
from vit_finetune.training.checkpoints import LOCK_FILE, missing_checkpoint_files
from vit_finetune.training.lock import OutputDirLockedError, output_dir_lock
from vit_finetune.training.run import build_training_arguments
from vit_finetune.training.trainer import ClassifierTrainer

from .helpers import checkpoint_steps, message_line, run_tree, train_cli, train_tree

CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


def test_non_finite_loss_exits_3_naming_the_step_and_keeps_the_last_checkpoint(data_dir, tmp_path, capsys):
    """Step 1's update leaves finite but huge weights (saved as checkpoint-1), whose loss at step 2 is NaN."""
    output_dir = tmp_path / "run"
    tree = run_tree(data_dir, output_dir, num_train_epochs=3, learning_rate=1e6, max_grad_norm=0.0,
                    lr_scheduler_type="constant", save_strategy="steps", save_steps=1, eval_strategy="no",
                    load_best_model_at_end=False)
    assert train_cli(tree, tmp_path / "nan.yaml") == EXIT_NON_FINITE_LOSS
    last_line = message_line(capsys.readouterr().err)
    assert last_line.startswith("error: non-finite loss at step 2 ") and "last good checkpoint" in last_line
    assert checkpoint_steps(output_dir) == [1] and missing_checkpoint_files(output_dir / "checkpoint-1") == []
    assert all(torch.isfinite(tensor).all() for tensor in weights(output_dir / "checkpoint-1").values())
    assert not (output_dir / LOCK_FILE).exists()


def test_out_of_memory_exits_4_naming_the_batch_size_key(data_dir, tmp_path, monkeypatch, capsys):
    def out_of_memory(self, model, inputs, num_items_in_batch=None):
        raise torch.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(ClassifierTrainer, "training_step", out_of_memory)
    tree = run_tree(data_dir, tmp_path / "run", max_steps=2)
    assert train_cli(tree, tmp_path / "oom.yaml") == EXIT_OUT_OF_MEMORY
    last_line = message_line(capsys.readouterr().err)
    assert last_line.startswith("error: out of memory at training.per_device_train_batch_size=8 ")
    assert "training.auto_find_batch_size=true" in last_line and CUDA_OOM in last_line


def test_cpu_allocator_failure_exits_4_naming_the_batch_size_key(data_dir, tmp_path, monkeypatch, capsys):
    """The CPU allocator raises a plain RuntimeError, not torch.OutOfMemoryError; here a real one, from asking it
    for 2^60 bytes inside the training step."""
    step = ClassifierTrainer.training_step

    def allocate_too_much(self, model, inputs, num_items_in_batch=None):
        torch.empty(1 << 60, dtype=torch.uint8)
        return step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(ClassifierTrainer, "training_step", allocate_too_much)
    assert train_cli(run_tree(data_dir, tmp_path / "run", max_steps=2), tmp_path / "oom.yaml") == EXIT_OUT_OF_MEMORY
    last_line = message_line(capsys.readouterr().err)
    assert last_line.startswith("error: out of memory at training.per_device_train_batch_size=8 ")
    assert "DefaultCPUAllocator: can't allocate memory" in last_line


def test_auto_find_batch_size_passes_through_the_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("training:\n  output_dir: out\n")
    run = load_run_config(config, ["training.auto_find_batch_size=true"])
    assert run.training.arguments["auto_find_batch_size"] is True
    assert build_training_arguments(run).auto_find_batch_size is True
    assert build_training_arguments(run_config_from_dict({"training": {}})).auto_find_batch_size is False


def test_auto_find_batch_size_retries_a_smaller_batch_after_an_oom(data_dir, tmp_path, monkeypatch):
    """With the finder on, an OOM at batch 8 is retried with a smaller batch (accelerate's finder, as on a GPU)."""
    seen = []
    step = ClassifierTrainer.training_step

    def oom_at_eight(self, model, inputs, num_items_in_batch=None):
        seen.append(len(inputs["labels"]))
        if len(inputs["labels"]) == 8:
            raise torch.OutOfMemoryError(CUDA_OOM)
        return step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(ClassifierTrainer, "training_step", oom_at_eight)
    result = train_tree(run_tree(data_dir, tmp_path / "run", max_steps=2, auto_find_batch_size=True,
                                 load_best_model_at_end=False))
    assert seen[0] == 8 and seen[1:] and max(seen[1:]) < 8
    assert result.metrics["test_accuracy"] >= 0.0 and (tmp_path / "run" / "model.safetensors").is_file()


HOLD_LOCK = ("import sys; from pathlib import Path; from vit_finetune.training.lock import output_dir_lock\n"
             "with output_dir_lock(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()")


def test_second_run_in_the_same_output_dir_refuses(data_dir, tmp_path, capsys):
    output_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(output_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        tree = run_tree(data_dir, output_dir, resume_from_checkpoint=True)
        assert train_cli(tree, tmp_path / "second.yaml") == EXIT_USER_ERROR
        last_line = message_line(capsys.readouterr().err)
        assert last_line == (f"error: output_dir {output_dir} is in use by another run (pid {holder.pid}, lock file "
                             f"{output_dir / LOCK_FILE}); wait for it to finish or choose another training.output_dir")
        assert sorted(p.name for p in output_dir.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0 and not (output_dir / LOCK_FILE).exists()  # released at exit


def test_lock_conflicts_in_one_process_too(tmp_path):
    with output_dir_lock(tmp_path):
        with pytest.raises(OutputDirLockedError, match="in use by another run"):
            with output_dir_lock(tmp_path):
                pass
    with output_dir_lock(tmp_path):  # released: free again
        pass


def test_stale_lock_of_a_dead_run_is_taken_over(data_dir, tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / LOCK_FILE).write_text(f"{pid}\n")
    with caplog.at_level(logging.WARNING):
        train_tree(run_tree(data_dir, output_dir, max_steps=1, resume_from_checkpoint=True,
                            load_best_model_at_end=False))
    assert f"taking over the stale lock {output_dir / LOCK_FILE} left by pid {pid}" in caplog.text
    assert (output_dir / "model.safetensors").is_file() and not (output_dir / LOCK_FILE).exists()
