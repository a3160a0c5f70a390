"""A disk that fills up during a run: a real tmpfs of a few hundred KB, mounted on the output folder inside a
user namespace (`unshare`), so every writer (torch.save, safetensors, Python) meets a real ENOSPC. The run stops
with exit 2 and one line naming what it was writing and the space that needs; what was published before stays
complete, and the final model is never half there. Durability on power loss cannot be tested here; the order of
the flushes and renames that gives it is."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vit_finetune.commands import EXIT_USER_ERROR
from vit_finetune.training.checkpoints import (COMPLETE_MARKER, STAGING_DIR, missing_checkpoint_files,
                                               publish_checkpoint)
from vit_finetune.training.durable_writes import publish_model_files

from .helpers import REPO, STEPS_PER_EPOCH, assert_same_weights, command_env, message_line, run_tree

USER_NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount"]
# mount a tmpfs of $1 bytes on $2, train with config $3, copy what the run left to $4 (the mount ends with the shell)
ON_SMALL_DISK = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; "$5" "$6" --config "$3"; status=$?; '
                 'cp -a "$2"/. "$4"; exit $status')


def user_namespaces_work() -> bool:
    try:
        return subprocess.run([*USER_NAMESPACE, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_mounts = pytest.mark.skipif(not user_namespaces_work(), reason="needs unshare with user namespaces (mounts)")


def disk_bytes(*paths: Path) -> int:
    """Space the files under `paths` take on a disk (whole blocks, as tmpfs counts them)."""
    files = [f for path in paths for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file()]
    return sum(f.stat().st_blocks * 512 for f in files)


def train_on_small_disk(tree: dict, tmp_path: Path, size: int) -> tuple[subprocess.CompletedProcess, Path]:
    """Train `tree` with its output folder on a tmpfs of `size` bytes; the exit and a copy of what it left."""
    import yaml

    output_dir, left = Path(tree["training"]["output_dir"]), tmp_path / "left"
    output_dir.mkdir()
    left.mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    argv = [*USER_NAMESPACE, "sh", "-c", ON_SMALL_DISK, "sh", str(size), str(output_dir), str(config), str(left),
            sys.executable, str(REPO / "scripts" / "train.py")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=command_env())
    assert done.returncode != 99, done.stderr[-2000:]
    return done, left


@needs_mounts
def test_disk_full_during_a_checkpoint_names_it_and_keeps_the_earlier_one(reference, data_dir, tmp_path):
    first = reference / f"checkpoint-{STEPS_PER_EPOCH}"
    size = disk_bytes(first) * 3 // 2  # room for one checkpoint, not two
    done, left = train_on_small_disk(run_tree(data_dir, tmp_path / "run"), tmp_path, size)
    assert done.returncode == EXIT_USER_ERROR, done.stderr[-3000:]
    line = message_line(done.stderr)
    # needs: the weights and Adam's two moments, 3 x 0.1 MB
    assert re.match(rf"error: no space left on device while writing checkpoint-{2 * STEPS_PER_EPOCH} "
                    r"\(needs ~0\.[23] MB, 0\.\d MB free in ", line), line
    assert "unexpected pos" not in done.stderr and "Traceback" not in done.stderr
    kept = left / first.name
    assert missing_checkpoint_files(kept) == []
    assert_same_weights(first, kept)  # the same deterministic run: checkpoint-5 as the reference wrote it
    assert sorted(p.name for p in left.glob("checkpoint-*")) == [first.name]


@needs_mounts
def test_disk_full_during_the_final_model_leaves_no_weights_file(reference, data_dir, tmp_path):
    run_files = [p for p in reference.iterdir() if p.is_file() and p.suffix != ".safetensors"]
    size = disk_bytes(*reference.glob("checkpoint-*"), *run_files) + disk_bytes(reference / "model.safetensors") // 2
    done, left = train_on_small_disk(run_tree(data_dir, tmp_path / "run"), tmp_path, size)
    assert done.returncode == EXIT_USER_ERROR, done.stderr[-3000:]
    assert message_line(done.stderr).startswith("error: no space left on device while writing the final model ")
    assert not (left / "model.safetensors").exists()  # never a partial or mismatched final model
    assert all(missing_checkpoint_files(folder) == [] for folder in left.glob("checkpoint-*"))


# ---- fsync before the rename, and of the folder after it ---------------------------------------------------------

@pytest.fixture
def disk_calls(monkeypatch) -> list[tuple[str, str]]:
    """("fsync", path) and ("replace", destination) in the order the code under test makes them."""
    calls = []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recorded_replace(source, destination):
        calls.append(("replace", str(destination)))
        replace(source, destination)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    return calls


def test_checkpoint_files_are_flushed_before_the_rename_and_the_folder_after(reference, tmp_path, disk_calls):
    staged = tmp_path / "run" / STAGING_DIR / "checkpoint-5"
    shutil.copytree(reference / "checkpoint-5", staged)
    (staged / COMPLETE_MARKER).unlink()
    publish_checkpoint(staged, tmp_path / "run" / "checkpoint-5")
    rename = disk_calls.index(("replace", str(tmp_path / "run" / "checkpoint-5")))
    flushed = {path for call, path in disk_calls[:rename] if call == "fsync"}
    assert {str(staged / name) for name in os.listdir(tmp_path / "run" / "checkpoint-5")} | {str(staged)} <= flushed
    assert disk_calls[rename + 1:] == [("fsync", str(tmp_path / "run"))]


def test_final_model_files_are_flushed_then_moved_in_with_the_weights_last(reference, tmp_path, disk_calls):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"an earlier run's weights")
    staged = folder / STAGING_DIR / "model"
    publish_model_files(folder, staged, lambda target: shutil.copytree(reference / "checkpoint-5", target,
                                                                       dirs_exist_ok=True))
    moves = [path for call, path in disk_calls if call == "replace"]
    first_move = disk_calls.index(("replace", moves[0]))
    assert {str(staged / Path(path).name) for path in moves} <= {p for _, p in disk_calls[:first_move]}
    assert moves[-1] == str(folder / "model.safetensors") and disk_calls[-1] == ("fsync", str(folder))
    assert_same_weights(reference / "checkpoint-5", folder)
    assert not (folder / STAGING_DIR).exists()
