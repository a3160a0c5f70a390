"""Helpers of the reliability suite: run configs, CLI calls, weight comparison, a live pickle payload."""

from __future__ import annotations

import builtins
import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from train_helpers import tiny_run_tree, weights
from vit_finetune.config import run_config_from_dict
from vit_finetune.training import run as run_module
from vit_finetune.training.run import TrainResult, train

CLASSES = ("red", "green", "blue", "yellow")
STEPS_PER_EPOCH = 5  # 38 training images, batch 8


def run_tree(data_dir: Path, output_dir: Path, **training: Any) -> dict:
    """A 2-epoch tiny run (evaluation, checkpoint and best-model tracking every epoch), as parsed YAML."""
    return tiny_run_tree(data_dir, output_dir, **{"num_train_epochs": 2, **training})


def train_tree(tree: dict) -> TrainResult:
    return train(run_config_from_dict(copy.deepcopy(tree)))


def train_cli(tree: dict, config: Path, *overrides: str) -> int:
    """`train.py --config CONFIG OVERRIDES` in this process; returns the exit status."""
    from vit_finetune.commands.train import main

    config.write_text(yaml.safe_dump(tree))
    return main(["--config", str(config), *overrides])


def message_line(stderr: str) -> str:
    """The one line a command printed for its failure ("error: ..." or "interrupted: ...").

    A progress bar left open by the failure may precede it on the same terminal line.
    """
    found = [match.group(0) for match in re.finditer(r"(error|interrupted): [^\r\n]*", stderr)]
    assert len(found) == 1, stderr[-2000:]
    return found[0]


def add_callback(monkeypatch, callback) -> None:
    """Make `train()` add `callback` to its Trainer (before its own interrupt callback)."""
    make_trainer = run_module.make_trainer

    def with_callback(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        trainer.add_callback(callback)
        return trainer

    monkeypatch.setattr(run_module, "make_trainer", with_callback)


def checkpoint_steps(output_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in Path(output_dir).glob("checkpoint-*"))


def copy_checkpoint(source: Path, output_dir: Path) -> Path:
    """A copy of checkpoint folder `source` inside a new `output_dir`."""
    target = output_dir / source.name
    shutil.copytree(source, target)
    return target


def assert_same_weights(expected_dir: Path, actual_dir: Path) -> None:
    expected, actual = weights(expected_dir), weights(actual_dir)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def max_weight_difference(expected_dir: Path, actual_dir: Path) -> float:
    expected, actual = weights(expected_dir), weights(actual_dir)
    return max((expected[k] - actual[k]).abs().max().item() for k in expected)


def file_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of `folder` by name, to show that nothing in it changed."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): code runs and a file appears."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


REPO = Path(__file__).resolve().parents[2]


def command_env() -> dict[str, str]:
    """The environment of a command run in a fresh process: offline, this checkout first on the path."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def command_line(script: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / script), *args]


def run_command(script: str, *args: str, timeout: float = 120, **popen: Any) -> subprocess.CompletedProcess:
    """`python scripts/SCRIPT ARGS` in a fresh process.

    A hang fails the calling test at `timeout` instead of blocking the suite; a crash of the interpreter
    (a segfault: returncode -11) cannot take pytest down with it.
    """
    return subprocess.run(command_line(script, *args), capture_output=True, text=True, timeout=timeout,
                          env=command_env(), **popen)


def train_subprocess(tree: dict, config: Path, *overrides: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`train.py --config CONFIG OVERRIDES` in a fresh process."""
    config.write_text(yaml.safe_dump(tree))
    return run_command("train.py", "--config", str(config), *overrides, timeout=timeout)
