"""In a multi-process run a signal may reach the processes at different steps, or one process only: they
agree after every step, so all stop and save at the same step. Two gloo processes, forked from this one
(a spawned process would import torch and transformers again, ~10 s)."""

import argparse
import os
import signal

import torch
import torch.distributed as dist
from transformers import TrainerControl, TrainerState

from vit_finetune.training.signals import GracefulInterrupt


def _step_end_after_signal_in_rank_1(rank: int, init_file: str, results) -> None:
    """One process of a 2-process gloo group: only rank 1 receives SIGTERM, then both end a step."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    interrupt, control = GracefulInterrupt(), TrainerControl()
    with interrupt.handlers():
        if rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        state = TrainerState(epoch=0.5, global_step=3)
        interrupt.on_step_end(argparse.Namespace(device=torch.device("cpu")), state, control)
    results[rank] = (interrupt.signum, interrupt.stop_signum, control.should_training_stop, control.should_save)
    dist.destroy_process_group()


def test_a_signal_to_one_process_stops_every_process_at_the_same_step(tmp_path):
    """The processes agree after each step: the one that got no signal stops and saves with the other."""
    with torch.multiprocessing.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.start_processes(_step_end_after_signal_in_rank_1, nprocs=2, start_method="fork",
                                              args=(str(tmp_path / "init"), results))
        assert dict(results) == {0: (None, signal.SIGTERM, True, True), 1: (signal.SIGTERM, signal.SIGTERM, True, True)}
