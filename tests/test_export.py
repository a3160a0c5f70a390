"""Export to the ecosystem: a trained ViT + cls folder is HF-native and `transformers.pipeline` agrees
with predict; other architectures are saved in the project's format; folders written by transformers
itself are accepted by eval and predict."""

import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from data_helpers import make_class_image
from helpers_hf import make_hf_siglip_checkpoint, make_hf_vit_checkpoint
from test_eval import CLASSES, run_eval, trained  # noqa: F401  (the shared trained-model fixture)
from test_predict import run_predict
from vit_finetune.data.preprocess import PreprocessConfig
from vit_finetune.loading import load_for_inference
from vit_finetune.modeling import ClassifierConfig, build_classifier, encoder_config_for_size, save_classifier
from vit_finetune.prediction import predict_files


def class_images(folder, size, count=3):
    """`count` fresh images per class at `size` (h, w), saved as PNG."""
    folder.mkdir()
    rng = np.random.default_rng(7)
    paths = []
    for index, name in enumerate(CLASSES):
        for i in range(count):
            paths.append(folder / f"{name}-{i}.png")
            make_class_image(index, len(CLASSES), name, size, rng).save(paths[-1])
    return paths


def pipeline_scores(model_dir, paths) -> list[dict[str, float]]:
    """{label: score} of every class, per image, from `transformers.pipeline`."""
    classify = transformers.pipeline("image-classification", model=str(model_dir), device="cpu")
    return [{entry["label"]: entry["score"] for entry in classify(str(path), top_k=len(CLASSES))} for path in paths]


def predict_scores(model_dir, paths) -> list[dict[str, float]]:
    run = predict_files(load_for_inference(model_dir), paths, top_k=len(CLASSES), precision="fp32")
    assert not run.errors
    return [dict(prediction.top_k) for prediction in run.predictions]


def test_trained_folder_is_hf_native(trained):
    config = json.loads((trained.output_dir / "config.json").read_text())
    assert config["architectures"] == ["ViTForImageClassification"] and "format" not in config
    model = transformers.AutoModelForImageClassification.from_pretrained(trained.output_dir)
    assert type(model).__name__ == "ViTForImageClassification"
    assert [model.config.id2label[i] for i in range(len(CLASSES))] == list(CLASSES)


def test_pipeline_agrees_with_predict_when_no_resize_is_needed(trained, tmp_path):
    paths = class_images(tmp_path / "images", size=32)  # the model's input size
    ours, theirs = predict_scores(trained.output_dir, paths), pipeline_scores(trained.output_dir, paths)
    for mine, hf in zip(ours, theirs):
        assert mine.keys() == hf.keys() and all(abs(mine[k] - hf[k]) <= 1e-4 for k in mine)


def test_pipeline_agrees_with_predict_on_resized_images(trained, tmp_path):
    paths = class_images(tmp_path / "images", size=(45, 61))  # PIL (pipeline) vs torch (ours) resize kernels
    ours, theirs = predict_scores(trained.output_dir, paths), pipeline_scores(trained.output_dir, paths)
    for mine, hf in zip(ours, theirs):
        assert max(mine, key=mine.get) == max(hf, key=hf.get)
        assert all(abs(mine[k] - hf[k]) <= 0.02 for k in mine)


def test_vit_mean_pooling_is_saved_in_project_format_and_loads(capsys, tmp_path):
    encoder = encoder_config_for_size("cifar-tiny", arch="vit", hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    model = build_classifier(ClassifierConfig(encoder=encoder, pooling="mean", num_labels=4,
                                              id2label=dict(enumerate(CLASSES)))).eval()
    folder = save_classifier(model, tmp_path / "mean")
    PreprocessConfig(height=32, width=32).save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["format"] == "vit_finetune"
    image = class_images(tmp_path / "images", size=32, count=1)[0]
    [prediction] = predict_files(load_for_inference(folder), [image], precision="fp32").predictions
    pixels = torch.from_numpy(np.asarray(Image.open(image), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        assert prediction.logits == pytest.approx(model(pixels).logits[0].tolist(), abs=1e-5)


@pytest.mark.parametrize("make_checkpoint", [make_hf_vit_checkpoint, make_hf_siglip_checkpoint], ids=["vit", "siglip"])
def test_folders_saved_by_transformers_work_in_eval_and_predict(trained, capsys, tmp_path, make_checkpoint):
    folder = make_checkpoint(tmp_path / "hf", id2label=dict(enumerate(CLASSES)))
    status, results, err = run_eval(capsys, "--checkpoint", folder, f"data.dataset={trained.data_dir}",
                                    f"data.cache_dir={trained.cache_dir}")
    assert status == 0, err
    assert results["num_images"] == 4 * 6 and (folder / "eval-test" / "eval_results.json").is_file()
    image = next((trained.data_dir / "test" / "green").iterdir())
    status, out, err = run_predict(capsys, folder, image, "--json")
    assert status == 0, err
    hf_model = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        expected = hf_model(**processor(Image.open(image), return_tensors="pt")).logits.softmax(-1)[0]
    assert json.loads(out)[0]["score"] == pytest.approx(expected.max().item(), abs=1e-4)
