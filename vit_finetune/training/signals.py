"""Graceful interrupts: SIGINT (Ctrl-C) or SIGTERM during training save a checkpoint, then stop.

The handler only records the signal; `GracefulInterrupt` (a `TrainerCallback`) turns it into
"save a checkpoint and stop" at the end of the current optimiser step, and `train()` then raises
`TrainingInterrupted`, which the command line turns into exit status 128 + signal number (130 for
SIGINT, 143 for SIGTERM). A second signal stops at once (`KeyboardInterrupt`, no checkpoint).

Data-loader workers ignore both signals (`workers_ignore_signals`). Service managers (systemd, SLURM,
Kubernetes) and a terminal's Ctrl-C signal the whole process group; torch's workers die on SIGTERM, and
the main process then stops at once ("DataLoader worker exited unexpectedly") without a checkpoint.
Ignoring it leaves the stop to the main process, which saves and shuts its workers down as after any epoch.

In a multi-process run (torchrun, `accelerate launch`) the launcher forwards the signal to every
process, but each receives it at its own moment, possibly one step apart. The processes therefore
agree after every step (one all-reduce of the received signal): all stop and save at the same step.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_exit_hook_registered = False


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; `exit_status` is 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + signum


class GracefulInterrupt(TrainerCallback):
    """Records SIGINT/SIGTERM while `handlers()` is active and makes the Trainer save and stop."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the signal this process received
        self.stop_signum: int | None = None  # the signal training stops for: this process's or another's

    @contextlib.contextmanager
    def handlers(self) -> Iterator[None]:
        """Install the handlers for the duration of the block, then restore the previous ones."""
        if threading.current_thread() is not threading.main_thread():  # Python allows handlers only there
            yield
            return
        previous = {signum: signal.signal(signum, self._record) for signum in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python

    def _record(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # a second signal: stop now, without a checkpoint
        self.signum = signum
        logger.warning("%s received: saving a checkpoint at the end of this step, then stopping "
                       "(send it again to stop at once)", signal.Signals(signum).name)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_signum is None:
            self.stop_signum = signal_of_any_process(self.signum, args.device)
        if self.stop_signum is not None:
            control.should_training_stop = True
            if not epoch_complete(state):  # at an epoch end the epoch-end save below does it
                control.should_save = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stop_signum is not None:  # no evaluation nor second save of a cut-short epoch
            complete = epoch_complete(state)
            control.should_save = complete
            control.should_evaluate = control.should_evaluate and complete
        return control

    def raise_if_interrupted(self, step: int, checkpoint: str) -> None:
        """Raise `TrainingInterrupted` if a signal came during training."""
        if self.stop_signum is not None:
            name = signal.Signals(self.stop_signum).name
            raise TrainingInterrupted(self.stop_signum, f"{name} at step {step}: checkpoint saved in {checkpoint}; "
                                                   "continue with training.resume_from_checkpoint=true")


def signal_of_any_process(signum: int | None, device: torch.device) -> int | None:
    """The signal received by any process of a distributed run (the larger number if several), else `signum`."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return signum
    received = torch.tensor([signum or 0], device=device)
    dist.all_reduce(received, op=dist.ReduceOp.MAX)
    return int(received.item()) or None


def epoch_complete(state) -> bool:
    """True right after the last optimiser step of an epoch (`state.epoch` is then a whole number)."""
    return state.epoch is not None and float(state.epoch).is_integer()


def workers_ignore_signals(init_fn: Callable[[int], None] | None) -> Callable[[int], None]:
    """A data-loader `worker_init_fn` that makes the worker ignore SIGINT and SIGTERM, then runs `init_fn`.

    The main process stops its workers as usual (a message on their queue), and workers whose main process
    died exit by themselves (torch's watchdog). Only at interpreter exit, where torch skips that shutdown and
    multiprocessing terminates its daemonic children with SIGTERM and then waits for them, would a worker that
    ignores SIGTERM be waited for forever; `_kill_daemonic_children` runs just before and kills them.
    """
    global _exit_hook_registered
    if not _exit_hook_registered:  # atexit runs the newest hook first: before multiprocessing's own
        atexit.register(_kill_daemonic_children)
        _exit_hook_registered = True
    return functools.partial(_ignore_signals_then, init_fn)


def _ignore_signals_then(init_fn: Callable[[int], None] | None, worker_id: int) -> None:
    for signum in HANDLED_SIGNALS:  # after torch set its own worker handlers, before any data is read
        signal.signal(signum, signal.SIG_IGN)
    if init_fn is not None:
        init_fn(worker_id)


def _kill_daemonic_children() -> None:
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if children and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would report them as crashed workers
    for child in children:
        child.kill()
