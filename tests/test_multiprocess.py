"""Several CPU processes (gloo), started the way a user starts them: `torchrun --nproc_per_node 2` and
`accelerate launch --multi_gpu --num_processes 2`. Both must give the single-process weights at the same
global batch (2 x 4 == 1 x 8), with the default best-model tracking, evaluation and checkpoints during the
run; SIGTERM to the launcher saves one complete checkpoint, and the resumed run ends with those weights.

Every launch starts three Python processes that import torch and transformers (~20 s of CPU), so the
accelerate line is tested as the resume of the interrupted torchrun run rather than as a run of its own.
"""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from data_helpers import make_image_folder
from train_helpers import tiny_run_tree, weights
from vit_finetune.config import run_config_from_dict
from vit_finetune.training.checkpoints import LOCK_FILE, STAGING_DIR, list_checkpoints, missing_checkpoint_files
from vit_finetune.training.run import train

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(REPO / "scripts" / "train.py")
CLASSES = ("red", "green", "blue", "yellow")
STEPS_PER_EPOCH = 8  # 64 training images, global batch 8 (no ragged batch)
EPOCHS = 6
LAST_STEP = EPOCHS * STEPS_PER_EPOCH
TIMEOUT = 600

# The command lines of the README, with this test's config.
LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"],
    "accelerate": [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu",
                   "--num_processes", "2"],
}


def run_tree(tmp_path: Path, data: Path, batch: int) -> dict:
    """A run of EPOCHS epochs in tmp_path/run, evaluating and saving every epoch."""
    tree = tiny_run_tree(data, tmp_path / "run", per_device_train_batch_size=batch, num_train_epochs=EPOCHS,
                         eval_strategy="steps", save_strategy="steps", eval_steps=STEPS_PER_EPOCH,
                         save_steps=STEPS_PER_EPOCH, save_total_limit=2, logging_steps=STEPS_PER_EPOCH)
    tree["data"]["augment"] = {"crop": "none", "horizontal_flip": False}  # per-process RNG streams differ
    return tree


def write_config(tmp_path: Path, data: Path) -> list[str]:
    """`--config FILE` of a 2-process run (batch 4 each) in tmp_path/run."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_tree(tmp_path, data, batch=4)))
    return ["--config", str(config)]


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"), classes=CLASSES, per_class=20)


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> Path:
    """The output folder of the single-process run (batch 8) that every multi-process run must match."""
    tmp_path = tmp_path_factory.mktemp("single")
    train(run_config_from_dict(run_tree(tmp_path, data, batch=8)))
    return tmp_path / "run"


def assert_same_weights_as(expected_dir: Path, actual_dir: Path) -> None:
    """The best model (final folder) and the last checkpoint agree within 1e-5."""
    for folder in ("", f"checkpoint-{LAST_STEP}"):
        expected, actual = weights(expected_dir / folder), weights(actual_dir / folder)
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.allclose(expected[key], actual[key], atol=1e-5), (folder, key)


def assert_checkpoint_bookkeeping(output_dir: Path, processes: int) -> None:
    """Complete published checkpoints (one RNG file per process), the best one kept, every path final."""
    checkpoints = list_checkpoints(output_dir)
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    assert best.parent == output_dir and best in checkpoints and checkpoints[-1].name == f"checkpoint-{LAST_STEP}"
    assert len(checkpoints) <= 2  # save_total_limit, the best one kept
    for folder in checkpoints:
        assert missing_checkpoint_files(folder) == [] and len(list(folder.glob("rng_state*.pth"))) == processes
    assert not (output_dir / STAGING_DIR).exists() and not (output_dir / LOCK_FILE).exists()


def test_torchrun_two_process_cpu_run_matches_single_process(single, data, tmp_path):
    run([*LAUNCHERS["torchrun"], SCRIPT, *write_config(tmp_path, data)])
    assert_checkpoint_bookkeeping(single, processes=1)
    assert_checkpoint_bookkeeping(tmp_path / "run", processes=2)
    assert_same_weights_as(single, tmp_path / "run")
    steps = json.loads((tmp_path / "run" / "trainer_log.json").read_text())[-1]["step"]
    assert steps == LAST_STEP  # the data really was split between the processes


def interrupt_after_first_checkpoint(command: list[str], output_dir: Path) -> subprocess.CompletedProcess:
    """Start `command` and send SIGTERM to it (the launcher) once the first checkpoint is published."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while not (output_dir / f"checkpoint-{STEPS_PER_EPOCH}").is_dir() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_sigterm_to_torchrun_saves_one_checkpoint_and_accelerate_launch_resumes(single, data, tmp_path):
    config = write_config(tmp_path, data)
    output_dir = tmp_path / "run"
    cut = interrupt_after_first_checkpoint([*LAUNCHERS["torchrun"], SCRIPT, *config], output_dir)
    # each process's last line (a progress bar may precede it on the same terminal line)
    interrupted = re.findall(r"interrupted: SIGTERM at step (\d+): checkpoint saved in (\S+);", cut.stderr)
    assert len(interrupted) == 2, cut.stderr[-3000:]  # both processes stopped on the signal, at the same step
    step = int(interrupted[0][0])
    assert interrupted[0] == interrupted[1] and STEPS_PER_EPOCH < step < LAST_STEP
    assert cut.returncode != 0  # torchrun reports the signal it got
    saved = output_dir / f"checkpoint-{step}"
    assert interrupted[0][1] == str(saved)
    assert list_checkpoints(output_dir)[-1] == saved
    assert missing_checkpoint_files(saved) == [] and len(list(saved.glob("rng_state*.pth"))) == 2
    assert not (output_dir / STAGING_DIR).exists() and not (output_dir / LOCK_FILE).exists()
    assert not (output_dir / "model.safetensors").exists()

    run([*LAUNCHERS["accelerate"], SCRIPT, *config, "training.resume_from_checkpoint=true"])
    assert_checkpoint_bookkeeping(output_dir, processes=2)
    assert_same_weights_as(single, output_dir)

