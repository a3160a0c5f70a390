"""Multi-label classification: the sigmoid / BCE head, the metrics against hand computations, the exported
folder's `problem_type` (transformers.pipeline agrees with predict), and a tiny ViT trained on generated
coloured shapes to >= 0.9 mAP, evaluated and predicted through the command lines."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from helpers_hf import make_hf_vit_checkpoint
from multilabel_helpers import SHAPES, make_shapes_folder
from test_eval import run_eval
from test_predict import run_predict
from train_helpers import tiny_run_tree
from vit_finetune.commands.eval import build_parser as eval_parser
from vit_finetune.config import run_config_from_dict
from vit_finetune.data.preprocess import PreprocessConfig
from vit_finetune.loading import load_for_inference
from vit_finetune.modeling import ClassifierConfig, build_classifier, encoder_config_for_size, load_classifier
from vit_finetune.modeling import save_classifier
from vit_finetune.multi_label import DEFAULT_THRESHOLD, multi_label_metrics
from vit_finetune.prediction import predict_files

LABELS = tuple(sorted(SHAPES))
MULTI = "multi_label_classification"


def tiny_classifier(pooling: str, problem_type: str | None = MULTI, seed: int = 0):
    torch.manual_seed(seed)
    encoder = encoder_config_for_size("cifar-tiny", arch="vit", hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    return build_classifier(ClassifierConfig(encoder=encoder, pooling=pooling, num_labels=len(LABELS),
                                             id2label=dict(enumerate(LABELS)), problem_type=problem_type)).eval()


def test_multi_label_loss_is_the_binary_cross_entropy_of_the_sigmoid():
    model = tiny_classifier("cls")
    pixels = torch.randn(3, 3, 32, 32)
    targets = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.float32)
    output = model(pixels, labels=targets)
    p = output.logits.sigmoid()
    by_hand = -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()  # the definition, over all 12 pairs
    assert output.loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    single = tiny_classifier("cls", problem_type=None)
    ids = torch.tensor([0, 3, 1])
    logits = single(pixels).logits
    expected = -(logits.log_softmax(-1)[torch.arange(3), ids]).mean()
    assert single(pixels, labels=ids).loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_metrics_equal_a_hand_computation():
    logits = np.array([[3.0, -1.0, -2.0], [2.0, 1.0, -2.0], [1.0, -3.0, -2.0], [-1.0, 2.0, -2.0]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    results = multi_label_metrics(logits, targets, ["a", "b", "c"], threshold=0.5)
    # label a: ranking pos, neg, pos, neg -> AP = (1/1 + 2/3) / 2; label b: ranking neg, pos -> AP = 1/2;
    # label c has no positive example: no AP, left out of the mean
    assert results["per_label"]["a"]["average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert results["per_label"]["b"]["average_precision"] == pytest.approx(0.5)
    assert results["per_label"]["c"]["average_precision"] is None
    assert results["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    # predicted at sigmoid >= 0.5 (logit >= 0): a on rows 0, 1, 2 (TP 2, FP 1); b on rows 1, 3 (TP 1, FP 1); c never
    assert results["per_label"]["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "average_precision": (1 + 2 / 3) / 2, "support": 2})
    assert results["per_label"]["b"]["f1"] == pytest.approx(2 / 3) and results["per_label"]["c"]["f1"] == 0
    assert results["macro_avg"]["f1"] == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    assert results["micro_avg"]["precision"] == pytest.approx(3 / 5) and results["micro_avg"]["recall"] == 1.0
    assert results["micro_avg"]["f1"] == pytest.approx(2 * 0.6 / 1.6)
    assert results["exact_match"] == pytest.approx(2 / 4)  # rows 0 and 2 are predicted exactly
    stricter = multi_label_metrics(logits, targets, ["a", "b", "c"], threshold=0.8)  # logit >= 1.386: a on rows 0, 1
    assert stricter["per_label"]["a"]["precision"] == 0.5 and stricter["mAP"] == results["mAP"]


def test_threshold_arguments():
    assert eval_parser().parse_args(["--checkpoint", "x"]).threshold == DEFAULT_THRESHOLD
    with pytest.raises(SystemExit) as exit_info:
        eval_parser().parse_args(["--checkpoint", "x", "--threshold", "1.5"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("pooling", ["cls", "mean"], ids=["hf-native", "project-format"])
def test_problem_type_is_saved_and_loaded(tmp_path, pooling):
    folder = save_classifier(tiny_classifier(pooling), tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["problem_type"] == MULTI
    assert load_classifier(folder).config.multi_label
    single = save_classifier(tiny_classifier(pooling, problem_type=None), tmp_path / "single")
    assert not load_classifier(single).config.multi_label
    if pooling == "cls":
        assert transformers.AutoModelForImageClassification.from_pretrained(folder).config.problem_type == MULTI
        assert "problem_type" not in json.loads((single / "config.json").read_text())  # HF's default, not written


def test_fine_tuning_a_single_label_checkpoint_for_multi_label_data(tmp_path):
    from vit_finetune.config import ModelSection
    from vit_finetune.training.model_setup import build_model

    checkpoint = make_hf_vit_checkpoint(tmp_path / "hf", num_labels=3)
    section = ModelSection(checkpoint=str(checkpoint))
    model = build_model(section, dict(enumerate(LABELS)), problem_type=MULTI)
    assert model.config.multi_label and model.config.num_labels == len(LABELS)
    assert not build_model(section, dict(enumerate(LABELS))).config.multi_label


@dataclass
class ShapesRun:
    output_dir: Path
    data_dir: Path
    cache_dir: Path
    metrics: dict


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> ShapesRun:
    """A tiny ViT + cls trained with data.task: multi_label on generated coloured shapes."""
    from vit_finetune.training.run import train

    root = tmp_path_factory.mktemp("shapes")
    data_dir = make_shapes_folder(root / "data", {"train": 200, "test": 60})
    tree = tiny_run_tree(data_dir, root / "run", num_train_epochs=6, per_device_train_batch_size=16,
                         learning_rate=1e-2)  # 60 steps
    tree["model"]["pooling"] = "cls"  # HF-native ViTForImageClassification, for transformers.pipeline
    tree["data"] |= {"task": "multi_label", "cache_dir": str(root / "cache")}
    result = train(run_config_from_dict(tree))
    return ShapesRun(root / "run", data_dir, root / "cache", result.metrics)


def test_training_reaches_map_and_selects_by_it(shapes_run):
    assert shapes_run.metrics["test_mAP"] >= 0.9
    log = json.loads((shapes_run.output_dir / "trainer_log.json").read_text())
    validation = [entry["eval_mAP"] for entry in log if "eval_mAP" in entry]
    assert validation and {"eval_micro_f1", "eval_macro_f1"} <= next(e for e in log if "eval_mAP" in e).keys()
    assert shapes_run.metrics["best_validation_mAP"] == pytest.approx(max(validation))
    assert json.loads((shapes_run.output_dir / "config.json").read_text())["problem_type"] == MULTI


def test_eval_reports_map_and_f1_at_the_threshold(shapes_run, capsys):
    cache = f"data.cache_dir={shapes_run.cache_dir}"
    status, results, err = run_eval(capsys, "--checkpoint", shapes_run.output_dir, cache)
    assert status == 0, err
    assert results["mAP"] >= 0.9 and results["threshold"] == 0.5 and results["labels"] == list(LABELS)
    assert results["per_label"].keys() == set(LABELS) and "confusion_matrix" not in results
    assert "mAP" in err and "micro F1" in err  # the table goes to stderr with --json
    status, strict, err = run_eval(capsys, "--checkpoint", shapes_run.output_dir, cache, "--threshold", "0.99",
                                   "--output-dir", shapes_run.output_dir / "eval-strict")
    assert status == 0, err
    assert strict["mAP"] == results["mAP"] and strict["threshold"] == 0.99
    recall = [scores["recall"] for scores in strict["per_label"].values()]
    assert recall <= [scores["recall"] for scores in results["per_label"].values()]


def test_eval_refuses_a_task_that_is_not_the_models(shapes_run, capsys):
    status, _, err = run_eval(capsys, "--checkpoint", shapes_run.output_dir, f"data.cache_dir={shapes_run.cache_dir}",
                              "data.task=single_label")
    assert status == 2 and "multi_label model but data.task is single_label" in err


def test_predict_prints_the_labels_above_the_threshold(shapes_run, capsys, tmp_path):
    images = make_shapes_folder(tmp_path / "new", {"images": 6}, seed=11) / "images"
    truth = {json.loads(line)["file_name"]: json.loads(line)["labels"]
             for line in (images / "metadata.jsonl").read_text().splitlines()}
    paths = [images / name for name in truth]
    status, out, err = run_predict(capsys, shapes_run.output_dir, *paths, "--json")
    assert status == 0, err
    entries = json.loads(out)
    for entry in entries:
        assert entry["scores"].keys() == set(LABELS) and entry["threshold"] == 0.5
        above = {label for label, score in entry["scores"].items() if score >= 0.5}
        assert {item["label"] for item in entry["labels"]} == above
    best = [max(entry["scores"], key=entry["scores"].get) for entry in entries]
    assert all(label in truth[path.name] for label, path in zip(best, paths))  # each image's best label is in it
    status, text, _ = run_predict(capsys, shapes_run.output_dir, paths[0], "--threshold", "0.01")
    printed = [part.rsplit(" (", 1)[0] for part in text.strip().split(": ", 1)[1].split(", ")]
    scores = entries[0]["scores"]
    assert status == 0 and printed == sorted((k for k in scores if scores[k] >= 0.01), key=lambda k: -scores[k])


def test_pipeline_returns_the_sigmoid_scores_of_predict(shapes_run, tmp_path):
    images = make_shapes_folder(tmp_path / "new", {"images": 4}, seed=12) / "images"
    paths = sorted(images.glob("*.png"))  # 32 x 32: the model's size, no resize kernels to differ
    run = predict_files(load_for_inference(shapes_run.output_dir), paths, precision="fp32")
    classify = transformers.pipeline("image-classification", model=str(shapes_run.output_dir), device="cpu")
    for path, prediction in zip(paths, run.predictions):
        theirs = {entry["label"]: entry["score"] for entry in classify(str(path), top_k=len(LABELS))}
        assert theirs.keys() == prediction.scores.keys()
        assert all(abs(theirs[k] - prediction.scores[k]) <= 1e-4 for k in theirs)
        sigmoid = {k: 1 / (1 + math.exp(-x)) for k, x in zip(LABELS, prediction.logits)}
        assert prediction.scores == pytest.approx(sigmoid)
    assert max(abs(sum(p.scores.values()) - 1) for p in run.predictions) > 0.1  # not softmax scores


def test_mean_pooling_project_format_predicts_sigmoid_scores(tmp_path):
    model = tiny_classifier("mean")
    folder = save_classifier(model, tmp_path / "mean")
    PreprocessConfig(height=32, width=32).save_pretrained(folder)
    image = make_shapes_folder(tmp_path / "new", {"images": 1}, seed=13) / "images" / "0000.png"
    [prediction] = predict_files(load_for_inference(folder), [image], precision="fp32", threshold=0.3).predictions
    pixels = torch.from_numpy(np.asarray(Image.open(image), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = model(pixels).logits[0].sigmoid().tolist()
    assert list(prediction.scores.values()) == pytest.approx(expected, abs=1e-5)
    assert [label for label, _ in prediction.labels] == sorted(
        (k for k, s in zip(LABELS, expected) if s >= 0.3), key=lambda k: -expected[LABELS.index(k)])


def test_trainer_label_smoothing_is_refused_for_multi_label(tmp_path):
    from vit_finetune.training.run import build_training_arguments
    from vit_finetune.typed import ConfigError

    tree = tiny_run_tree(tmp_path / "data", tmp_path / "run", label_smoothing_factor=0.1)
    build_training_arguments(run_config_from_dict(tree))  # single-label: the Trainer's smoothed cross-entropy
    tree["data"]["task"] = "multi_label"
    with pytest.raises(ConfigError, match="label_smoothing_factor"):
        build_training_arguments(run_config_from_dict(tree))
    arguments = build_training_arguments(run_config_from_dict(tree | {"training": tree["training"] | {
        "label_smoothing_factor": 0.0}}))
    assert arguments.metric_for_best_model == "mAP" and arguments.greater_is_better


@pytest.mark.parametrize("override, key", [
    ("data.augment.mixup_alpha=0.8", "mixup_alpha"),
    ("data.augment.label_smoothing=0.1", "data.augment.label_smoothing"),
    ("training.class_weights=balanced", "training.class_weights"),
    ("data.sampler=balanced", "data.sampler"),
])
def test_settings_defined_for_one_class_per_image_are_refused_for_multi_label(override, key):
    """Mixing, smoothing, class weights and the balanced sampler assume class ids: refused by name, not misapplied."""
    from vit_finetune.config import load_run_config
    from vit_finetune.typed import ConfigError

    with pytest.raises(ConfigError, match=key):
        load_run_config("cifar10-tiny", ["data.task=multi_label", "training.label_smoothing_factor=0", override])
