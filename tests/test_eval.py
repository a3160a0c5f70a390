"""Evaluation: numbers equal a hand computation, checkpoint-N and overrides, label checks, the CLI.

The `trained` fixture (one tiny ViT + cls run on generated data) is shared with test_predict.py and
test_export.py; it trains once per session.
"""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support
from transformers import EvalPrediction

from data_helpers import make_image_folder
from helpers_hf import make_hf_vit_checkpoint
from train_helpers import tiny_run_tree
from vit_finetune.commands.eval import main as eval_main
from vit_finetune.config import run_config_from_dict
from vit_finetune.data.collate import ImageCollator
from vit_finetune.data.preprocess import PreprocessConfig
from vit_finetune.data.sources import load_splits
from vit_finetune.evaluation import (EVAL_RESULTS, CONFUSION_MATRIX, LabelMismatchError, check_labels,
                                     classification_metrics, confusion_matrix_figure)
from vit_finetune.modeling import hub, load_classifier
from vit_finetune.scores import balanced_accuracy
from vit_finetune.training.metrics import compute_metrics

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("blue", "green", "red", "yellow")  # sorted, as the imagefolder loader orders them
TRAINED_KEY = pytest.StashKey()


@dataclass
class TrainedRun:
    output_dir: Path  # final model folder (HF-native: ViT + cls)
    data_dir: Path  # imagefolder with train/ and test/, 32x32 images
    cache_dir: Path  # decoded-pixel cache used by the run


@pytest.fixture(scope="module")
def trained(request, tmp_path_factory) -> TrainedRun:
    """A tiny ViT + cls model trained for 2 epochs (checkpoints kept); trained once per session."""
    if TRAINED_KEY not in request.config.stash:
        from vit_finetune.training.run import train

        root = tmp_path_factory.mktemp("trained")
        data_dir = make_image_folder(root / "data", classes=CLASSES, per_class=12)
        tree = tiny_run_tree(data_dir, root / "run", num_train_epochs=2)
        tree["model"]["pooling"] = "cls"
        tree["data"]["cache_dir"] = str(root / "cache")
        train(run_config_from_dict(tree))
        request.config.stash[TRAINED_KEY] = TrainedRun(root / "run", data_dir, root / "cache")
    return request.config.stash[TRAINED_KEY]


def run_eval(capsys, *argv) -> tuple[int, dict | None, str]:
    """`eval --json --precision fp32 ARGV` in-process: (exit status, parsed stdout JSON, stderr)."""
    status = eval_main(["--json", "--precision", "fp32", *map(str, argv)])
    captured = capsys.readouterr()
    return status, json.loads(captured.out) if status == 0 else None, captured.err


def hand_logits(model_dir: Path, data_dir: Path, cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the test split, computed without the evaluation module."""
    model = load_classifier(model_dir)
    data = {"dataset": str(data_dir), "validation_fraction": 0.2, "cache_dir": str(cache_dir)}
    run = run_config_from_dict({"data": data})
    test = load_splits(run.data).test
    batch = ImageCollator(PreprocessConfig.from_pretrained(model_dir))([test[i] for i in range(len(test))])
    with torch.no_grad():
        return model(batch["pixel_values"]).logits, batch["labels"]


def test_eval_numbers_equal_a_hand_computation(trained, capsys):
    checkpoint = sorted(trained.output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[0]
    status, results, _ = run_eval(capsys, "--checkpoint", checkpoint)
    assert status == 0
    logits, labels = hand_logits(checkpoint, trained.data_dir, trained.cache_dir)
    predictions = logits.argmax(-1)
    assert results["num_images"] == len(labels) == 4 * 6
    assert results["accuracy"] == pytest.approx((predictions == labels).float().mean().item(), abs=1e-9)
    top4 = logits.topk(4, dim=-1).indices
    assert results["top_k"] == 4
    assert results["top5_accuracy"] == pytest.approx((top4 == labels[:, None]).any(-1).float().mean().item())
    matrix = np.zeros((4, 4), dtype=int)
    np.add.at(matrix, (labels.numpy(), predictions.numpy()), 1)
    assert results["confusion_matrix"] == matrix.tolist()
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, zero_division=0)
    for i, name in enumerate(CLASSES):
        assert results["per_class"][name] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]})
    assert results["macro_avg"]["f1"] == pytest.approx(f1.mean())
    assert results["balanced_accuracy"] == pytest.approx(recall.mean())  # every class occurs in the test split
    assert results["dataset"] == str(trained.data_dir) and results["split"] == "test"
    assert results["checkpoint"] == str(checkpoint) and results["images_per_second"] > 0


def test_eval_writes_into_the_checkpoint_folder_and_keeps_the_weights(trained, capsys):
    weights = (trained.output_dir / "model.safetensors").read_bytes()
    status, results, err = run_eval(capsys, "--checkpoint", trained.output_dir)
    assert status == 0
    out = trained.output_dir / "eval-test"
    assert json.loads((out / EVAL_RESULTS).read_text()) == results
    assert (out / CONFUSION_MATRIX).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (trained.output_dir / "model.safetensors").read_bytes() == weights
    assert results["accuracy"] >= 0.75  # the trained model is far better than chance (0.25)
    assert "accuracy" in err and str(out) in err  # the summary goes to stderr when --json owns stdout


def test_eval_data_set_override_and_output_dir(trained, capsys, tmp_path):
    other = make_image_folder(tmp_path / "other", classes=CLASSES, per_class=6, size=(40, 48), seed=3)
    out = tmp_path / "results"
    status, results, _ = run_eval(capsys, "--checkpoint", trained.output_dir, "--output-dir", out, "--batch-size", 5,
                                  f"data.dataset={other}", f"data.cache_dir={tmp_path / 'cache'}")
    assert status == 0 and results["dataset"] == str(other) and results["num_images"] == 4 * 3
    assert results["batch_size"] == 5 and (out / EVAL_RESULTS).is_file() and (out / CONFUSION_MATRIX).is_file()


def test_eval_with_a_config_file(trained, capsys, tmp_path):
    checkpoint = make_hf_vit_checkpoint(tmp_path / "hf", id2label=dict(enumerate(CLASSES)))  # no recorded config
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": str(trained.data_dir), "cache_dir": str(trained.cache_dir)}}))
    status, results, _ = run_eval(capsys, "--checkpoint", checkpoint, "--config", config, "data.max_eval_samples=8")
    assert status == 0 and results["dataset"] == str(trained.data_dir) and results["num_images"] == 8


def test_hub_id_goes_through_the_snapshot_and_writes_outside_the_cache(trained, capsys, tmp_path, monkeypatch):
    snapshot = make_hf_vit_checkpoint(tmp_path / "cache" / "snapshot", id2label=dict(enumerate(CLASSES)))
    monkeypatch.setattr(hub, "snapshot_download", lambda repo_id, allow_patterns: str(snapshot))
    monkeypatch.chdir(tmp_path)
    status, results, _ = run_eval(capsys, "--checkpoint", "some-org/tiny-vit", f"data.dataset={trained.data_dir}",
                                  f"data.cache_dir={trained.cache_dir}")
    assert status == 0 and results["checkpoint"] == "some-org/tiny-vit"
    assert (tmp_path / "eval" / "some-org--tiny-vit-test" / EVAL_RESULTS).is_file()
    assert not (snapshot / "eval-test").exists()


def test_summary_goes_to_stdout_without_json(trained, capsys):
    assert eval_main(["--checkpoint", str(trained.output_dir), "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and all(name in out for name in CLASSES)


def test_label_mismatch_lists_both_label_sets(trained, capsys, tmp_path):
    other = make_image_folder(tmp_path / "pets", classes=("cat", "dog", "red", "green"), per_class=2)
    status, _, err = run_eval(capsys, "--checkpoint", trained.output_dir, f"data.dataset={other}",
                              f"data.cache_dir={tmp_path / 'cache'}")
    assert status == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("error:") and str(list(CLASSES)) in line and str(["cat", "dog", "green", "red"]) in line


def test_same_names_in_another_order_is_a_mismatch():
    with pytest.raises(LabelMismatchError, match="checkpoint \\['a', 'b'\\], data set \\['b', 'a'\\]"):
        check_labels(["a", "b"], ["b", "a"], "ckpt", "data")


def test_no_recorded_config_and_no_data_set_is_a_clear_error(capsys, tmp_path):
    checkpoint = make_hf_vit_checkpoint(tmp_path / "hf", id2label=dict(enumerate(CLASSES)))
    status, _, err = run_eval(capsys, "--checkpoint", checkpoint)
    assert status == 2 and "data.dataset=" in err and "no run_config.yaml" in err


def test_missing_checkpoint_is_a_clear_error(capsys, tmp_path):
    status, _, err = run_eval(capsys, "--checkpoint", tmp_path / "nope")
    assert status == 2 and f"{tmp_path / 'nope'}: no such model folder" in err


def test_metrics_on_random_logits_match_sklearn_and_a_loop():
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(7)]
    logits = rng.normal(size=(200, 7)).astype(np.float32)
    labels = rng.integers(0, 6, size=200)  # class c6 never occurs: its scores are 0, not NaN
    results = classification_metrics(logits, labels, names)
    ranks = [(logits[i] > logits[i, labels[i]]).sum() for i in range(200)]
    assert results["top_k"] == 5 and results["top5_accuracy"] == pytest.approx(np.mean([r < 5 for r in ranks]))
    assert results["accuracy"] == pytest.approx(np.mean([r == 0 for r in ranks]))
    precision, recall, f1, support = precision_recall_fscore_support(labels, logits.argmax(1), labels=range(7),
                                                                     zero_division=0)
    assert results["per_class"]["c6"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    macro = {"precision": precision.mean(), "recall": recall.mean(), "f1": f1.mean()}
    assert results["macro_avg"] == pytest.approx(macro)
    assert np.asarray(results["confusion_matrix"]).sum(axis=1).tolist() == support.tolist()
    predictions = logits.argmax(1)
    recalls = [np.mean(predictions[labels == k] == k) for k in range(6)]  # the classes present in the labels
    assert results["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-12)


def test_balanced_accuracy_is_the_mean_recall_of_the_present_classes():
    labels = np.array([0] * 95 + [1] * 5)
    majority = np.zeros(100, dtype=int)
    assert (majority == labels).mean() == 0.95 and balanced_accuracy(majority, labels) == 0.5
    predictions = np.array([0] * 90 + [2] * 5 + [1] * 3 + [0] * 2)  # class 2 is predicted but never true
    assert balanced_accuracy(predictions, labels) == pytest.approx((90 / 95 + 3 / 5) / 2)
    assert balanced_accuracy(np.array([], dtype=int), np.array([], dtype=int)) == 0.0
    metrics = compute_metrics(EvalPrediction(predictions=np.eye(3)[predictions], label_ids=labels))
    assert metrics == pytest.approx({"accuracy": 0.93, "balanced_accuracy": (90 / 95 + 3 / 5) / 2})


def test_confusion_matrix_figure_names_the_classes(tmp_path):
    figure = confusion_matrix_figure([[3, 1], [0, 4]], ["cat", "dog"])
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["cat", "dog"]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["cat", "dog"]
    figure.savefig(tmp_path / "cm.png")
    assert Image.open(tmp_path / "cm.png").size[0] > 100


@pytest.mark.parametrize("command", [[sys.executable, str(REPO / "scripts" / "eval.py")], ["vit-finetune", "eval"]])
def test_help(command):
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--checkpoint" in result.stdout and "--output-dir" in result.stdout
