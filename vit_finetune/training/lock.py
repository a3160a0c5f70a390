"""One run per output directory: `output_dir/_lock` holds the pid of the run writing there.

The lock is an exclusive `flock` on that file, so the kernel drops it when its process dies, however
it dies; a lock file left behind by a dead run is therefore taken over (with a warning naming the old
pid) while a live one makes the second run stop before it touches anything. The file is removed when
the run ends. (`flock` is advisory and local to one machine's kernel; on network file systems that do
not forward it, two machines can still share an output directory.)
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from vit_finetune.training.checkpoints import LOCK_FILE, ResumeError, require_directory

logger = logging.getLogger(__name__)


class OutputDirLockedError(ResumeError):
    """Another live run holds the output directory."""


@contextlib.contextmanager
def output_dir_lock(output_dir: Path) -> Iterator[Path]:
    """Hold `output_dir/_lock` for the duration of the block (`output_dir` is created, and removed again
    if the block leaves it empty)."""
    require_directory(output_dir)
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    fd = _acquire(path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
        if created and not any(output_dir.iterdir()):
            output_dir.rmdir()


def _acquire(path: Path) -> int:
    """An open descriptor of `path` holding its exclusive lock, with our pid written in."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputDirLockedError(
                f"output_dir {path.parent} is in use by another run (pid {_read_pid(path)}, lock file {path}); "
                "wait for it to finish or choose another training.output_dir") from None
        if _same_file(fd, path):  # else the previous holder removed the file between our open and flock
            break
        os.close(fd)
    previous = _read_pid(path)
    if previous is not None:
        logger.warning("taking over the stale lock %s left by pid %s (that run has ended)", path, previous)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
