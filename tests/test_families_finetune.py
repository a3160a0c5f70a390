"""Fine-tuning a checkpoint of each family end to end (`train` command, new head for another label count),
then the output folder: HF-native where HF has a class for the pooling, and `transformers.pipeline`
agreeing with predict within 1e-4. Unsupported checkpoints stop train and predict with exit status 2."""

import json
import subprocess
import sys

import pytest
import torch
import transformers
import yaml

from data_helpers import make_image_folder
from helpers_hf import make_hf_family_checkpoint
from test_eval import CLASSES, REPO
from test_export import class_images, pipeline_scores, predict_scores
from train_helpers import tiny_run_tree, weights
from vit_finetune.commands.train import main as train_main
from vit_finetune.modeling import load_classifier

# family, HF class of the checkpoint, run-config model keys, HF class of the fine-tuned folder (None: project format)
FAMILIES = {
    "deit": ("deit", "DeiTForImageClassificationWithTeacher", {}, "DeiTForImageClassificationWithTeacher"),
    "dinov2": ("dinov2", "Dinov2ForImageClassification", {}, "Dinov2ForImageClassification"),
    "dinov2-registers": ("dinov2_with_registers", "Dinov2WithRegistersModel", {},
                         "Dinov2WithRegistersForImageClassification"),
    "clip": ("clip", "CLIPModel", {}, "CLIPForImageClassification"),
    "vit-mae-cls": ("vit_mae", "ViTMAEForPreTraining", {"pooling": "cls"}, "ViTForImageClassification"),
    "vit-mae": ("vit_mae", "ViTMAEModel", {}, None),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), classes=CLASSES, per_class=8)


def checkpoint(folder, family: str, hf_class: str):
    """A tiny checkpoint with 3 labels whose positions are stored for 48 px and whose processor crops
    32 px (as DINOv2's are stored for 518 px and cropped to 224): loading resizes them."""
    folder = make_hf_family_checkpoint(folder, family, hf_class, image_size=48,
                                       num_labels=None if "ForImageClassification" not in hf_class else 3)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    size = {"shortest_edge": 32} if "shortest_edge" in config["size"] else {"height": 32, "width": 32}
    config.update(size=size, crop_size={"height": 32, "width": 32}, do_center_crop=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    return folder


def fine_tune(tmp_path, capsys, data_dir, model: dict) -> tuple[int, str]:
    """`train.py --config ...` for 3 steps of batch 8; returns the exit status and stderr."""
    tree = tiny_run_tree(data_dir, tmp_path / "run", max_steps=3, eval_strategy="no", save_strategy="no",
                         load_best_model_at_end=False)
    tree["model"] = model
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree))
    status = train_main(["--config", str(config)])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("name", FAMILIES)
def test_fine_tuned_family_exports_and_pipeline_agrees_with_predict(name, data_dir, tmp_path, capsys):
    family, hf_class, model_keys, exported_class = FAMILIES[name]
    source = checkpoint(tmp_path / "checkpoint", family, hf_class)
    status, err = fine_tune(tmp_path, capsys, data_dir, {"checkpoint": str(source), **model_keys})
    assert status == 0, err[-3000:]
    out = tmp_path / "run"
    raw = json.loads((out / "config.json").read_text())
    model = load_classifier(out)
    assert model.config.num_labels == len(CLASSES) and model.config.encoder.image_size == 32
    paths = class_images(tmp_path / "images", size=32)
    ours = predict_scores(out, paths)
    if exported_class is None:
        assert raw["format"] == "vit_finetune" and raw["pooling"] == "mean"
        assert all(abs(sum(scores.values()) - 1) < 1e-5 for scores in ours)
        return
    assert raw["architectures"] == [exported_class]
    for mine, hf in zip(ours, pipeline_scores(out, paths), strict=True):
        assert mine.keys() == hf.keys() and all(abs(mine[k] - hf[k]) <= 1e-4 for k in mine)


def test_encoder_is_fine_tuned_from_the_checkpoint(data_dir, tmp_path, capsys):
    """Training starts from the checkpoint's encoder (positions resized from 48 to 32 px) and moves it."""
    source = checkpoint(tmp_path / "checkpoint", "dinov2", "Dinov2ForImageClassification")
    start = load_classifier(source, image_size=32, id2label=dict(enumerate(CLASSES)))
    status, err = fine_tune(tmp_path, capsys, data_dir, {"checkpoint": str(source), "drop_path_rate": 0.1,
                                                         "hidden_dropout_prob": 0.1})
    assert status == 0, err[-3000:]
    trained = load_classifier(tmp_path / "run")
    start_state, trained_state = start.state_dict(), trained.state_dict()
    moved = [k for k in start_state if not torch.equal(start_state[k], trained_state[k])]
    assert "backbone.pos_embed" in moved and "backbone.encoder.layers.0.ls1.gamma" in moved
    assert weights(tmp_path / "run")["classifier.weight"].shape == (len(CLASSES), 2 * 32)  # CLS + mean patch


@pytest.fixture
def unsupported_checkpoint(tmp_path):
    """A Swin checkpoint (a hierarchical vision transformer this project does not build)."""
    config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1], num_heads=[2],
                                     window_size=4)
    folder = tmp_path / "swin"
    transformers.SwinForImageClassification(config).save_pretrained(folder)
    return folder


def assert_names_supported_types(message: str, folder) -> None:
    assert "unsupported model_type 'swin'" in message and str(folder) in message
    for supported in ("clip", "deit", "dinov2", "dinov2_with_registers", "siglip", "vit", "vit_mae"):
        assert f"'{supported}'" in message


def test_unsupported_model_type_exits_2_listing_the_supported_ones(unsupported_checkpoint, data_dir, tmp_path,
                                                                   capsys):
    status, err = fine_tune(tmp_path, capsys, data_dir, {"checkpoint": str(unsupported_checkpoint)})
    assert status == 2
    assert_names_supported_types(err.strip().splitlines()[-1], unsupported_checkpoint)
    image = next((data_dir / "test" / "red").iterdir())
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "predict.py"), "--checkpoint",
                             str(unsupported_checkpoint), str(image)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    assert_names_supported_types(result.stderr.strip().splitlines()[-1], unsupported_checkpoint)
