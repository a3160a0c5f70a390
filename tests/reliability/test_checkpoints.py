"""Atomic checkpoints: a save that fails half way leaves nothing that looks complete; incomplete
folders are skipped by auto-resume (with a warning) and refused by name when given explicitly."""

import json
import logging

import pytest
from transformers import Trainer

from vit_finetune.modeling import load_classifier
from vit_finetune.training.trainer import ClassifierTrainer
from vit_finetune.training.checkpoints import (COMPLETE_MARKER, STAGING_DIR, ResumeError, missing_checkpoint_files,
                                               newest_complete_checkpoint, resolve_resume)

from .helpers import (STEPS_PER_EPOCH, assert_same_weights, checkpoint_steps, copy_checkpoint, file_bytes, run_tree,
                      train_tree)

FIRST, LAST = STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH


def test_reference_checkpoints_are_complete_and_point_at_final_paths(reference):
    assert checkpoint_steps(reference) == [FIRST, LAST]
    assert not (reference / STAGING_DIR).exists()
    for step in (FIRST, LAST):
        folder = reference / f"checkpoint-{step}"
        assert missing_checkpoint_files(folder) == []
        best = json.loads((folder / "trainer_state.json").read_text())["best_model_checkpoint"]
        assert best is not None and STAGING_DIR not in best and (reference / best.rsplit("/", 1)[-1]).is_dir()
        load_classifier(folder)


def test_save_failing_half_way_leaves_previous_checkpoint_and_final_model(data_dir, tmp_path, monkeypatch):
    output_dir = tmp_path / "run"
    tree = run_tree(data_dir, output_dir, num_train_epochs=1, load_best_model_at_end=False)
    train_tree(tree)  # checkpoint-5 and a final model
    final_before, checkpoint_before = file_bytes(output_dir), file_bytes(output_dir / f"checkpoint-{FIRST}")

    def disk_full(self, output_dir):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Trainer, "_save_rng_state", disk_full)  # after model, optimizer and scheduler
    tree["training"].update(resume_from_checkpoint=True, num_train_epochs=2)
    with pytest.raises(OSError, match=f"no space left on device while writing checkpoint-{LAST} "):
        train_tree(tree)

    half = output_dir / STAGING_DIR / f"checkpoint-{LAST}"
    assert (half / "model.safetensors").is_file() and (half / "optimizer.pt").is_file()  # it did fail half way
    assert not (half / COMPLETE_MARKER).exists()
    assert checkpoint_steps(output_dir) == [FIRST]
    assert newest_complete_checkpoint(output_dir) == output_dir / f"checkpoint-{FIRST}"
    assert file_bytes(output_dir / f"checkpoint-{FIRST}") == checkpoint_before
    assert file_bytes(output_dir) == final_before  # the final model and its artefacts, and no lock file left
    load_classifier(output_dir), load_classifier(output_dir / f"checkpoint-{FIRST}")

    monkeypatch.undo()  # the disk has space again: the next resume finishes and clears the leftovers
    resumed_from = []
    load = ClassifierTrainer._load_from_checkpoint
    monkeypatch.setattr(ClassifierTrainer, "_load_from_checkpoint",
                        lambda self, path, model=None: resumed_from.append(path) or load(self, path, model))
    train_tree(tree)
    assert resumed_from == [str(output_dir / f"checkpoint-{FIRST}")]
    assert checkpoint_steps(output_dir) == [FIRST, LAST] and not (output_dir / STAGING_DIR).exists()
    assert_same_weights(output_dir / f"checkpoint-{LAST}", output_dir)


@pytest.mark.parametrize("remove", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
                                    "model.safetensors", COMPLETE_MARKER])
def test_incomplete_checkpoint_is_skipped_by_auto_resume_and_refused_by_path(reference, tmp_path, caplog, remove):
    output_dir = tmp_path / "run"
    good = copy_checkpoint(reference / f"checkpoint-{FIRST}", output_dir)
    bad = copy_checkpoint(reference / f"checkpoint-{LAST}", output_dir)
    (bad / remove).unlink()
    with caplog.at_level(logging.WARNING):
        assert resolve_resume(True, output_dir) == good
    assert f"skipping incomplete checkpoint {bad} (missing {remove})" in caplog.text
    with pytest.raises(ResumeError, match=rf"checkpoint-{LAST} is incomplete \(missing {remove}\)"):
        resolve_resume(str(bad), output_dir)


def test_staging_folder_is_never_resumed(reference, tmp_path):
    output_dir = tmp_path / "run"
    good = copy_checkpoint(reference / f"checkpoint-{FIRST}", output_dir)
    copy_checkpoint(reference / f"checkpoint-{LAST}", output_dir / STAGING_DIR)  # even a complete-looking one
    assert resolve_resume(True, output_dir) == good


def test_auto_resume_skips_incomplete_newest_end_to_end(reference, data_dir, tmp_path, caplog):
    """A run resumed with `true` over a half-written newest checkpoint continues from the older one and
    ends with the reference weights (the skipped folder is then replaced by a complete one)."""
    output_dir = tmp_path / "run"
    copy_checkpoint(reference / f"checkpoint-{FIRST}", output_dir)
    bad = copy_checkpoint(reference / f"checkpoint-{LAST}", output_dir)
    (bad / "optimizer.pt").unlink()
    train_tree(run_tree(data_dir, output_dir, resume_from_checkpoint=True))
    assert f"skipping incomplete checkpoint {bad}" in caplog.text
    assert missing_checkpoint_files(bad) == []
    assert_same_weights(reference, output_dir)


def test_save_total_limit_one_keeps_only_the_best_checkpoint_at_the_end(data_dir, tmp_path):
    """During training the newest and the best checkpoint are kept; at the end only the best (as the stock Trainer)."""
    output_dir = tmp_path / "run"
    train_tree(run_tree(data_dir, output_dir, num_train_epochs=3, save_total_limit=1))
    (kept,) = output_dir.glob("checkpoint-*")
    best = json.loads((kept / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert best == str(kept) and missing_checkpoint_files(kept) == []
    assert_same_weights(kept, output_dir)  # the final model is the best checkpoint's
