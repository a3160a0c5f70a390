"""Training end to end on generated data: artefacts, reload, fine-tuning, resume, guards."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainingArguments

from data_helpers import make_image_folder
from helpers_hf import make_hf_vit_checkpoint
from train_helpers import tiny_run_tree, weights
from vit_finetune.config import run_config_from_dict
from vit_finetune.data.batch_augment import augment_train_batch
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.config import AugmentConfig, RandomErasingConfig
from vit_finetune.training.losses import soft_target_cross_entropy
from vit_finetune.data.preprocess import PreprocessConfig
from vit_finetune.data.sources import load_splits
from vit_finetune.modeling import load_classifier
from vit_finetune.modeling.config import ClassifierConfig, encoder_config_for_size
from vit_finetune.modeling.model import ImageClassifier
from vit_finetune.training.checkpoints import ResumeError
from vit_finetune.training.run import train
from vit_finetune.training.trainer import ClassifierTrainer

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


def test_training_step_augmentations_reach_the_loss(tmp_path):
    """data.augment's random erasing and mixup / cutmix run on training batches, whose loss is then the
    soft-target cross-entropy of the augmented batch; evaluation batches keep the model's own loss."""
    encoder = encoder_config_for_size("cifar-tiny", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, patch_size=8)
    model = ImageClassifier(ClassifierConfig(encoder=encoder, pooling="mean", num_labels=4))
    augment = AugmentConfig(mixup_alpha=1.0, cutmix_alpha=1.0, label_smoothing=0.1,
                            random_erasing=RandomErasingConfig(p=1.0))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = ClassifierTrainer(model=model, args=args, batch_augment=augment)
    pixels, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 4

    def batch():
        return {"pixel_values": pixels.clone(), "labels": labels.clone()}

    with torch.no_grad():
        torch.manual_seed(0)
        loss = trainer.compute_loss(model.train(), batch())
        torch.manual_seed(0)
        mixed = augment_train_batch(batch(), 4, augment)
        assert mixed["labels"].shape == (8, 4) and not torch.equal(mixed["pixel_values"], pixels)
        assert loss == soft_target_cross_entropy(model(mixed["pixel_values"]).logits, mixed["labels"])
        assert trainer.compute_loss(model.eval(), batch()) == model(pixels, labels=labels).loss


def test_gradient_checkpointing_through_the_train_command(data_dir, tmp_path, caplog, monkeypatch):
    """`training.gradient_checkpointing=true` on the train command: the same weights after 3 steps (dropout and
    stochastic depth on: the recomputation replays their draws), and fewer activations kept per step."""
    from benchmarks.memory import saved_tensor_counter
    from vit_finetune.commands.train import main as train_main
    from vit_finetune.training.trainer import ClassifierTrainer

    saved_per_step = []
    plain_step = ClassifierTrainer.training_step

    def counted_step(self, model, inputs, num_items_in_batch=None):
        with saved_tensor_counter({p.untyped_storage().data_ptr() for p in model.parameters()}) as saved:
            loss = plain_step(self, model, inputs, num_items_in_batch)
        saved_per_step.append(sum(saved.values()))
        return loss

    monkeypatch.setattr(ClassifierTrainer, "training_step", counted_step)
    caplog.set_level(logging.INFO, logger="vit_finetune")
    for name, overrides in (("plain", []), ("checkpointed", ["training.gradient_checkpointing=true"])):
        tree = tiny_run_tree(data_dir, tmp_path / name, max_steps=3, eval_strategy="no", save_strategy="no",
                             load_best_model_at_end=False)
        tree["model"].update(num_hidden_layers=4, hidden_dropout_prob=0.1, drop_path_rate=0.2)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(tree))
        assert train_main(["--config", str(tmp_path / f"{name}.yaml"), *overrides]) == 0
    assert "activation checkpointing: every 1 of 4 encoder layers" in caplog.text
    plain, checkpointed = weights(tmp_path / "plain"), weights(tmp_path / "checkpointed")
    for key in plain:
        assert torch.allclose(plain[key], checkpointed[key], atol=1e-5, rtol=0), key
    assert len(saved_per_step) == 6 and max(saved_per_step[3:]) < 0.5 * min(saved_per_step[:3])
