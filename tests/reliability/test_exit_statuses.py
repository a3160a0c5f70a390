"""The exit-status contract on inputs that used to end in a traceback and exit 1: each error is turned, where the
input is read, into one of the command line's error classes (`commands.exit_status` maps them to 2 for bad
input), with the file or key named. Model folders, resume state and output folders here; configs and data
folders in test_bad_inputs.py, memory (exit 4) in test_failures.py, a full disk in test_disk_full.py."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from vit_finetune.commands import EXIT_USER_ERROR, exit_status
from vit_finetune.loading import load_for_inference

from .helpers import STEPS_PER_EPOCH, copy_checkpoint, message_line, run_command, run_tree, train_cli, train_tree
from .test_untrusted_files import tiny_model_folder


def refused(call, *args, **kwargs) -> Exception:
    """The exception `call` raises, which must map to exit status 2."""
    with pytest.raises(Exception) as caught:
        call(*args, **kwargs)
    assert exit_status(caught.value) == EXIT_USER_ERROR, repr(caught.value)
    return caught.value


# ---- model folders: config.json and preprocessor_config.json ----------------------------------------------------

def edit_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def config_json(**fields):
    return "config.json", lambda stored: stored | fields


def processor_json(**fields):
    return "preprocessor_config.json", lambda stored: stored | fields


BAD_MODEL_FILES = {  # case -> (folder kind, file, change of its parsed JSON, fragment of the message)
    "config a list": ("hf", "config.json", lambda stored: [1, 2], "config.json"),
    "hidden size a word": ("hf", *config_json(hidden_size="big"), "hidden_size"),
    "no attention heads": ("hf", *config_json(num_attention_heads=0), "num_attention_heads"),
    "label ids not numbers": ("hf", *config_json(id2label={"x": "cat"}), "'x'"),
    "image size a float": ("hf", *config_json(image_size=64.0), "image_size"),
    "model type unknown": ("hf", *config_json(model_type="resnet"), "resnet"),
    "project config without encoder": ("project", "config.json",
                                       lambda s: {k: v for k, v in s.items() if k != "encoder"}, "encoder"),
    "project encoder a word": ("project", *config_json(encoder="big"), "config.json"),
    "project image size a float": ("project", "config.json",
                                   lambda s: s | {"encoder": s["encoder"] | {"image_size": 32.0}}, "image_size"),
    "processor a list": ("project", "preprocessor_config.json", lambda stored: [224], "preprocessor_config.json"),
    "processor size a list": ("project", *processor_json(size=[32, 32]), "preprocessor_config.json"),
    "processor size a word": ("project", *processor_json(size={"height": "32", "width": 32}), "'32'"),
    "processor mean a word": ("project", *processor_json(image_mean="grey"), "grey"),
    "processor resample code": ("project", *processor_json(resample=7), "resample"),
    "processor of another shape": ("project", *processor_json(do_center_crop=False, size={"height": 32, "width": 48}),
                                   "32x48 px inputs"),
}


@pytest.fixture(scope="module")
def model_folders(reference, tmp_path_factory) -> dict[str, Path]:
    """A tiny HF-native ViT folder and the reliability run's final model (project format: mean pooling)."""
    root = tmp_path_factory.mktemp("models")
    project = root / "project"
    shutil.copytree(reference, project, ignore=shutil.ignore_patterns("checkpoint-*"))
    return {"hf": tiny_model_folder(root / "hf"), "project": project}


@pytest.mark.parametrize("case", BAD_MODEL_FILES)
def test_unreadable_model_folder_exits_2_naming_the_file(model_folders, tmp_path, case):
    kind, name, change, fragment = BAD_MODEL_FILES[case]
    folder = tmp_path / "model"
    shutil.copytree(model_folders[kind], folder)
    edit_json(folder / name, change)
    err = refused(load_for_inference, folder)
    assert str(folder / name) in str(err) and fragment in str(err), str(err)


def test_truncated_processor_config_exits_2_naming_it(model_folders, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_folders["project"], folder)
    path = folder / "preprocessor_config.json"
    path.write_text(path.read_text()[:20])
    assert str(path) in str(refused(load_for_inference, folder))


# ---- resume state: optimizer, scheduler, RNG and trainer state ----------------------------------------------------

def spoil_pickle(change):
    def spoil(path: Path) -> None:
        torch.save(change(torch.load(path, weights_only=False)), path)
    return spoil


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def optimizer_for_unknown_parameter(state: dict) -> dict:
    state["state"][10_000] = state["state"][0]
    return state


def trainer_state(**fields):
    return lambda path: edit_json(path, lambda stored: stored | fields)


BAD_RESUME_FILES = {  # case -> (file, spoil, fragment of the message)
    "optimizer truncated": ("optimizer.pt", truncate, "optimizer.pt"),
    "optimizer a list": ("optimizer.pt", spoil_pickle(lambda state: list(state["state"][0].values())), "a dict"),
    "optimizer without groups": ("optimizer.pt", spoil_pickle(lambda state: {"state": state["state"]}), "param_groups"),
    "optimizer state of no parameter": ("optimizer.pt", spoil_pickle(optimizer_for_unknown_parameter), "10000"),
    "scheduler truncated": ("scheduler.pt", truncate, "scheduler.pt"),
    "scheduler a list": ("scheduler.pt", spoil_pickle(lambda state: [state]), "a dict"),
    "scheduler epoch a word": ("scheduler.pt", spoil_pickle(lambda state: state | {"last_epoch": "five"}),
                               "last_epoch"),
    "rng without cpu state": ("rng_state.pth",
                              spoil_pickle(lambda state: {k: v for k, v in state.items() if k != "cpu"}), "cpu"),
    "rng python state wrong": ("rng_state.pth", spoil_pickle(lambda state: state | {"python": (3, (1, 2), None)}),
                               "python"),
    "rng cpu state wrong": ("rng_state.pth", spoil_pickle(lambda state: state | {"cpu": torch.zeros(3)}), "cpu"),
    "trainer state truncated": ("trainer_state.json", truncate, "trainer_state.json"),
    "trainer state a list": ("trainer_state.json", lambda path: path.write_text("[1, 2]"), "trainer_state.json"),
    "trainer state of a newer release": ("trainer_state.json", trainer_state(flux_capacitor=1), "flux_capacitor"),
    "global step a word": ("trainer_state.json", trainer_state(global_step="ten"), "global_step is 'ten'"),
    "global step negative": ("trainer_state.json", trainer_state(global_step=-5), "global_step is -5"),
}


@pytest.mark.parametrize("case", BAD_RESUME_FILES)
def test_unreadable_resume_state_is_refused_before_training_naming_the_file(reference, data_dir, tmp_path, case):
    name, spoil, fragment = BAD_RESUME_FILES[case]
    checkpoint = copy_checkpoint(reference / f"checkpoint-{STEPS_PER_EPOCH}", tmp_path / "run")
    spoil(checkpoint / name)
    err = refused(train_tree, run_tree(data_dir, tmp_path / "run", resume_from_checkpoint=True))
    assert str(checkpoint) in str(err) and name in str(err) and fragment in str(err), str(err)


def test_optimizer_groups_of_other_sizes_are_refused(reference, data_dir, tmp_path):
    """Well-formed, but its parameter groups do not match this run's: the Trainer's own load fails."""
    checkpoint = copy_checkpoint(reference / f"checkpoint-{STEPS_PER_EPOCH}", tmp_path / "run")
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    dropped = state["param_groups"][0]["params"].pop()
    state["state"].pop(dropped, None)
    torch.save(state, checkpoint / "optimizer.pt")
    err = refused(train_tree, run_tree(data_dir, tmp_path / "run", resume_from_checkpoint=True))
    assert str(err).startswith(f"{checkpoint}: cannot resume from optimizer.pt / scheduler.pt: "), str(err)


def test_resuming_with_another_model_size_names_the_checkpoint(reference, data_dir, tmp_path):
    checkpoint = copy_checkpoint(reference / f"checkpoint-{STEPS_PER_EPOCH}", tmp_path / "run")
    tree = run_tree(data_dir, tmp_path / "run", resume_from_checkpoint=True)
    tree["model"]["hidden_size"] = 64
    err = refused(train_tree, tree)
    assert str(err).startswith(f"{checkpoint}: its weights do not fit this run's model"), str(err)
    assert "size mismatch" in str(err)


# ---- output folders that cannot be written -----------------------------------------------------------------------

def under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("a file, not a folder")
    return tmp_path / "file" / "run"


def read_only(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp_path / "locked").mkdir(mode=0o555)
    return tmp_path / "locked" / "run"


UNWRITABLE = {"under a file": under_a_file, "read-only": read_only}


@pytest.mark.parametrize("where", UNWRITABLE)
def test_unwritable_output_dir_exits_2_before_training(data_dir, tmp_path, capsys, where):
    output_dir = UNWRITABLE[where](tmp_path)
    assert train_cli(run_tree(data_dir, output_dir), tmp_path / "c.yaml") == EXIT_USER_ERROR
    assert message_line(capsys.readouterr().err).startswith(f"error: output_dir {output_dir}: not writable (")


@pytest.mark.parametrize("where", UNWRITABLE)
def test_unwritable_eval_output_dir_exits_2_before_evaluating(reference, tmp_path, where):
    output_dir = UNWRITABLE[where](tmp_path)
    done = run_command("eval.py", "--checkpoint", str(reference), "--output-dir", str(output_dir),
                       "data.max_eval_samples=4")
    assert done.returncode == EXIT_USER_ERROR, done.stderr[-3000:]
    assert message_line(done.stderr).startswith(f"error: --output-dir {output_dir}: not writable (")
    assert "Evaluating" not in done.stderr  # refused before any image was evaluated
