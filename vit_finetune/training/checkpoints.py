"""Trainer checkpoints: which ones are complete, which one to resume, and the output-dir guard."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from vit_finetune.training.durable_writes import sync_directory, sync_folder

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "checkpoint_complete"  # written last, after every other file of a checkpoint
# Private files of a run start with "_": the Trainer never uploads those to the Hub (nor checkpoint-N folders).
STAGING_DIR = "_incomplete"  # checkpoints are written in here, then renamed to output_dir/checkpoint-N
LOCK_FILE = "_lock"  # held by the run writing to output_dir (see training/lock.py)
TRAINER_STATE = "trainer_state.json"
REQUIRED_FILES = (TRAINER_STATE, "model.safetensors", "optimizer.pt", "scheduler.pt")
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


class ResumeError(ValueError):
    """A checkpoint cannot be resumed from, or the output directory is not safe to write."""


def missing_checkpoint_files(folder: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """Files a resumable checkpoint needs that `folder` lacks (empty list = complete); `extra` are the files
    the run's fine-tuning method adds (`training.finetune.checkpoint_files`: EMA, LoRA adapter)."""
    missing = [name for name in (*REQUIRED_FILES, *extra, COMPLETE_MARKER) if not (folder / name).is_file()]
    if not any(folder.glob("rng_state*.pth")):
        missing.append("rng_state.pth")
    return missing


def list_checkpoints(output_dir: Path) -> list[Path]:
    """`checkpoint-N` folders in `output_dir`, oldest step first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if p.is_dir() and (m := _CHECKPOINT_NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def newest_complete_checkpoint(output_dir: Path, extra: tuple[str, ...] = ()) -> Path | None:
    """The highest-step checkpoint with every file present; incomplete ones are skipped with a warning."""
    for folder in reversed(list_checkpoints(output_dir)):
        missing = missing_checkpoint_files(folder, extra)
        if not missing:
            return folder
        logger.warning("skipping incomplete checkpoint %s (missing %s)", folder, ", ".join(missing))
    return None


def resolve_resume(resume: bool | str, output_dir: Path, extra: tuple[str, ...] = ()) -> Path | None:
    """Map the `resume_from_checkpoint` setting to a checkpoint folder (or None for a fresh start); `extra`
    as in `missing_checkpoint_files`."""
    if resume is False:
        return None
    if resume is True:
        found = newest_complete_checkpoint(output_dir, extra)
        if found is None:
            logger.warning("resume requested but %s holds no complete checkpoint: starting fresh", output_dir)
        return found
    folder = Path(resume)
    if not folder.is_dir():
        raise ResumeError(f"resume_from_checkpoint: {folder} is not a directory")
    missing = missing_checkpoint_files(folder, extra)
    if missing:
        raise ResumeError(f"resume_from_checkpoint: {folder} is incomplete (missing {', '.join(missing)})")
    return folder


def publish_checkpoint(staged: Path, final: Path) -> None:
    """Mark the fully written `staged` folder complete and rename it to `final` (an older `final` is replaced).

    A crash before the rename leaves only the hidden staging folder, which no resume ever reads. Every file is
    flushed to the disk before the rename and the parent folder after it, so that a power loss cannot publish
    a folder of empty files.
    """
    (staged / COMPLETE_MARKER).write_text("complete\n")
    sync_folder(staged)
    if final.exists():  # the same step saved again (e.g. interrupt at an epoch end): keep the newer one
        replaced = staged.with_name(f"{staged.name}.replaced")
        os.replace(final, replaced)
        os.replace(staged, final)
        shutil.rmtree(replaced)
    else:
        os.replace(staged, final)
    sync_directory(final.parent)


def remove_earlier_checkpoints(output_dir: Path) -> None:
    """Delete the `checkpoint-N` folders in `output_dir` (logged): a run that overwrites the folder starts here, so
    that a later `resume_from_checkpoint=true` resumes only its own checkpoints, never an earlier run's."""
    earlier = list_checkpoints(output_dir)
    if earlier:
        logger.warning("overwrite_output_dir: deleting %d checkpoint(s) of an earlier run in %s: %s", len(earlier),
                       output_dir, ", ".join(folder.name for folder in earlier))
    for folder in earlier:
        shutil.rmtree(folder)


def require_directory(output_dir: Path) -> None:
    """Refuse an output_dir that exists as something other than a directory."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ResumeError(f"output_dir {output_dir} exists and is not a directory")


def check_output_dir(output_dir: Path, resume: bool | str, overwrite: bool) -> None:
    """Refuse to write into a non-empty output directory unless resuming or overwriting (the lock file aside)."""
    require_directory(output_dir)
    content = [p for p in output_dir.iterdir() if p.name != LOCK_FILE] if output_dir.is_dir() else []
    if content and resume is False and not overwrite:
        raise ResumeError(
            f"output_dir {output_dir} is not empty; set training.resume_from_checkpoint=true to continue "
            "or training.overwrite_output_dir=true to start over"
        )
