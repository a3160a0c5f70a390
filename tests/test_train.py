"""Training end to end on generated data: artefacts, reload, fine-tuning, resume, guards."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from data_helpers import make_image_folder
from helpers_hf import make_hf_vit_checkpoint
from train_helpers import tiny_run_tree, weights
from vit_finetune.config import run_config_from_dict
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.preprocess import PreprocessConfig
from vit_finetune.data.sources import load_splits
from vit_finetune.modeling import load_classifier
from vit_finetune.training.checkpoints import LOCK_FILE, STAGING_DIR, ResumeError, missing_checkpoint_files
from vit_finetune.training.run import train

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("red", "green", "blue", "yellow")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data"), classes=CLASSES, per_class=24)


def accuracy_of(model_dir: Path, data_dir: Path) -> float:
    """Test accuracy of a saved model folder, computed by hand (no Trainer)."""
    model = load_classifier(model_dir)
    run = run_config_from_dict({"data": {"dataset": str(data_dir), "validation_fraction": 0.2}})
    test = load_splits(run.data).test
    batch = ImageCollator(PreprocessConfig.from_pretrained(model_dir))([test[i] for i in range(len(test))])
    with torch.no_grad():
        predictions = model(batch["pixel_values"]).logits.argmax(-1)
    return (predictions == batch["labels"]).float().mean().item()


def test_train_script_end_to_end(data_dir, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_run_tree(data_dir, tmp_path / "run", num_train_epochs=4)))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(config), "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)
    assert metrics["test_accuracy"] >= 0.9
    out = tmp_path / "run"
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "run_config.yaml",
                 "metrics.json", "trainer_log.json", "training_curves.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert {"test_accuracy", "train_runtime", "train_samples_per_second"} <= set(saved)
    assert json.loads((out / "config.json").read_text())["id2label"] == {str(i): c for i, c in enumerate(sorted(CLASSES))}
    assert accuracy_of(out, data_dir) == pytest.approx(saved["test_accuracy"], abs=1e-6)
    assert "test accuracy" in result.stderr.splitlines()[-1]
    assert "attention for training: " in result.stderr  # model.attn_implementation: auto, the default


def test_finetune_from_local_hf_checkpoint_keeps_encoder_and_makes_new_head(data_dir, tmp_path):
    checkpoint = make_hf_vit_checkpoint(tmp_path / "hf", num_labels=3, image_size=32, patch_size=8)
    tree = tiny_run_tree(data_dir, tmp_path / "run", max_steps=1, learning_rate=1e-12)
    tree["model"] = {"checkpoint": str(checkpoint)}
    run = run_config_from_dict(tree)
    from vit_finetune.training.model_setup import build_model

    model = build_model(run.model, {i: c for i, c in enumerate(CLASSES)})
    hf = weights(checkpoint)
    ours = load_classifier(checkpoint).state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("classifier."):
            assert torch.equal(value, ours[key]), key
    assert model.classifier.out_features == len(CLASSES) and hf["classifier.weight"].shape[0] == 3
    assert torch.equal(model.state_dict()["backbone.patch_embed.proj.weight"],
                       hf["vit.embeddings.patch_embeddings.projection.weight"])


def test_resume_from_epoch_checkpoint_is_bitwise_equal(data_dir, tmp_path):
    full = tiny_run_tree(data_dir, tmp_path / "full", num_train_epochs=2, load_best_model_at_end=False)
    train(run_config_from_dict(full))
    first, last = sorted((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resumed = tiny_run_tree(data_dir, tmp_path / "resumed", num_train_epochs=2, load_best_model_at_end=False)
    resumed["training"]["resume_from_checkpoint"] = str(first)
    train(run_config_from_dict(resumed))
    expected, actual = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert not torch.equal(weights(first)["classifier.weight"], expected["classifier.weight"])  # training did move on


def test_auto_resume_skips_incomplete_checkpoint(data_dir, tmp_path, caplog):
    tree = tiny_run_tree(data_dir, tmp_path / "run", num_train_epochs=1, load_best_model_at_end=False)
    train(run_config_from_dict(tree))
    (checkpoint,) = (tmp_path / "run").glob("checkpoint-*")
    half = tmp_path / "run" / "checkpoint-999"
    shutil.copytree(checkpoint, half)
    (half / "optimizer.pt").unlink()
    tree["training"].update(resume_from_checkpoint=True, num_train_epochs=2)
    train(run_config_from_dict(tree))
    assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-999" in caplog.text
    tree["training"]["resume_from_checkpoint"] = str(half)
    with pytest.raises(ResumeError, match="checkpoint-999 is incomplete .*optimizer.pt"):
        train(run_config_from_dict(tree))


def test_non_empty_output_dir_needs_resume_or_overwrite(data_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    tree = tiny_run_tree(data_dir, tmp_path / "run", max_steps=1)
    with pytest.raises(ResumeError, match="not empty"):
        train(run_config_from_dict(tree))
    assert (tmp_path / "run" / "precious.txt").read_text() == "keep me"


def test_config_error_exits_non_zero_naming_the_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  learning_rate: three\n")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(config)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "training.learning_rate" in result.stderr and str(config) in result.stderr


def test_two_process_cpu_run_matches_single_process(tmp_path):
    """torchrun with 2 gloo processes x batch 4 == 1 process x batch 8 (64 train images: no ragged batch), with
    the defaults' best-model tracking, evaluating and saving every 4 steps (checkpoint rotation included)."""
    data = make_image_folder(tmp_path / "data", classes=CLASSES, per_class=20)
    configs = {}
    for name, batch in (("single", 8), ("multi", 4)):
        tree = tiny_run_tree(data, tmp_path / name, per_device_train_batch_size=batch, eval_strategy="steps",
                             save_strategy="steps", eval_steps=4, save_steps=4, save_total_limit=2)
        tree["data"]["augment"] = {"crop": "none", "horizontal_flip": False}  # per-process RNG streams differ
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(tree))
    script = str(REPO / "scripts" / "train.py")
    single = subprocess.run([sys.executable, script, "--config", str(configs["single"])],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", script,
                            "--config", str(configs["multi"])], capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    for name in ("single", "multi"):
        assert_same_checkpoint_bookkeeping(tmp_path / name, rng_files=1 if name == "single" else 2)
    for folder in ("", "checkpoint-16"):  # the best model (final folder) and the last checkpoint
        expected, actual = weights(tmp_path / "single" / folder), weights(tmp_path / "multi" / folder)
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.allclose(expected[key], actual[key], atol=1e-5), (folder, key)
    steps = json.loads((tmp_path / "multi" / "trainer_log.json").read_text())[-1]["step"]
    assert steps == 2 * 64 // 8  # the data really was split between the processes


def assert_same_checkpoint_bookkeeping(output_dir: Path, rng_files: int) -> None:
    """Complete published checkpoints (one RNG file per process), the best one kept, every path final."""
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    assert best.parent == output_dir and best in checkpoints and checkpoints[-1].name == "checkpoint-16"
    assert len(checkpoints) == 2  # save_total_limit, the best one kept
    for folder in checkpoints:
        assert missing_checkpoint_files(folder) == [] and len(list(folder.glob("rng_state*.pth"))) == rng_files
    assert not (output_dir / STAGING_DIR).exists() and not (output_dir / LOCK_FILE).exists()
