"""Writes that survive a crash or a power loss, and a clear message when the disk is full.

A rename publishes a folder or file atomically, but only for what reached the disk: without `fsync` a power loss
after the rename can leave the new name pointing at empty or short files. `sync_folder` flushes every file of a
folder and the folder itself before its rename, and `sync_directory` the parent after it.

The final model is written next to the run's files (metrics, config, checkpoints), so it cannot be one renamed
folder: `publish_model_files` writes it into a staging folder, flushes it, removes an earlier weights file and
moves the files in with the weights last. A crash leaves either the complete new model or no weights file, never
new weights with another model's config.

A full disk fails each writer in its own words (torch.save: "unexpected pos 640 vs 534"); `disk_full_error` turns
any of them into one `DiskFullError` naming what was being written and about how much space it needs.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError

WEIGHTS_SUFFIX = ".safetensors"
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
WRITER_ERRORS = (RuntimeError, SafetensorError, OSError)  # what torch.save, safetensors and Python raise


class DiskFullError(OSError):
    """A checkpoint or the final model could not be written for lack of space; earlier checkpoints are intact."""


def sync_directory(folder: Path) -> None:
    """Flush `folder`'s entries (names created, renamed or removed in it) to the disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(folder: Path) -> None:
    """Flush every file under `folder` to the disk, then each directory in it, then `folder` itself."""
    paths = sorted(folder.rglob("*"))
    for path in [p for p in paths if p.is_file()]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for directory in [p for p in paths if p.is_dir()] + [folder]:
        sync_directory(directory)


def publish_model_files(folder: Path, staged: Path, write: Callable[[Path], None]) -> None:
    """Write a model's files with `write(staged)`, flush them, and move them into `folder`: an earlier weights
    file is removed first and the new one moved in last (see the module docstring)."""
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    write(staged)
    sync_folder(staged)
    files = sorted(staged.iterdir(), key=lambda path: path.suffix == WEIGHTS_SUFFIX)  # weights last
    for path in files:
        if path.suffix == WEIGHTS_SUFFIX:
            (folder / path.name).unlink(missing_ok=True)
    sync_directory(folder)
    for path in files:
        if path.is_dir():  # e.g. a LoRA run's adapter/: an earlier one is replaced whole
            shutil.rmtree(folder / path.name, ignore_errors=True)
        os.replace(path, folder / path.name)
    sync_directory(folder)
    shutil.rmtree(staged)
    remove_if_empty(staged.parent)


def remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def tensor_bytes(*tensor_sources) -> int:
    """Bytes of the tensors in modules (their parameters and buffers) and optimizer state dicts."""
    total = 0
    for source in tensor_sources:
        if isinstance(source, torch.nn.Module):
            tensors = list(source.state_dict().values())
        else:  # an optimizer's per-parameter state: {param: {"exp_avg": tensor, ...}}
            tensors = [value for state in source.values() for value in state.values() if torch.is_tensor(value)]
        total += sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    return total


def disk_full_error(err: BaseException, what: str, folder: Path, needed: int) -> DiskFullError | None:
    """A `DiskFullError` for `err` raised while writing `what` into `folder`, or None if `err` is not about space.

    An `OSError` says so by its errno; torch.save and safetensors hide it ("unexpected pos ...", "I/O error"),
    so for them the folder's free space, measured now that the write has failed, must be under `needed`.
    """
    free = shutil.disk_usage(folder).free
    if isinstance(err, OSError) and err.errno is not None:
        if err.errno not in SPACE_ERRNOS:
            return None
    elif type(err) not in WRITER_ERRORS or free >= needed:  # not a subclass: NonFiniteWeightsError is a RuntimeError
        return None
    return DiskFullError(f"no space left on device while writing {what} (needs ~{needed / 1e6:.1f} MB, "
                         f"{free / 1e6:.1f} MB free in {folder}); earlier checkpoints are intact: free space and "
                         "resume with training.resume_from_checkpoint=true")
