"""Saving (HF-native where an HF class exists, else project format) and safe reading of weights."""

import builtins

import pytest
import torch
import transformers

from helpers_hf import make_hf_siglip_checkpoint, make_hf_vit_checkpoint
from vit_finetune.modeling import (
    CheckpointError,
    ClassifierConfig,
    build_classifier,
    encoder_config_for_size,
    load_classifier,
    read_state_dict,
    save_classifier,
)
from vit_finetune.modeling.hub import read_config_json

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8
)


def tiny_classifier(arch: str, pooling: str):
    encoder = encoder_config_for_size("tiny", arch=arch, **TINY)
    torch.manual_seed(0)
    labels = {0: "cat", 1: "dog", 2: "bird"}
    model = build_classifier(ClassifierConfig(encoder=encoder, pooling=pooling, num_labels=3, id2label=labels))
    with torch.no_grad():  # LayerNorms and LayerScale off their init values, so that a mix-up shows
        for name, param in model.named_parameters():
            if "norm" in name or "gamma" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.mark.parametrize(
    "arch, pooling, hf_class",
    [
        ("vit", "cls", "ViTForImageClassification"),
        ("siglip", "mean", "SiglipForImageClassification"),
        ("deit", "cls", "DeiTForImageClassification"),
        ("deit", "cls_distill", "DeiTForImageClassificationWithTeacher"),
        ("dinov2", "cls_mean", "Dinov2ForImageClassification"),
        ("dinov2_with_registers", "cls_mean", "Dinov2WithRegistersForImageClassification"),
        ("clip", "mean", "CLIPForImageClassification"),
        ("vit_mae", "cls", "ViTForImageClassification"),  # the same network; HF has no ViT-MAE classifier
    ],
)
@torch.no_grad()
def test_saved_native_folder_loads_in_transformers_with_same_logits(tmp_path, arch, pooling, hf_class):
    model = tiny_classifier(arch, pooling)
    save_classifier(model, tmp_path / "ours")
    raw = read_config_json(tmp_path / "ours")
    assert raw["architectures"] == [hf_class] and raw["id2label"] == {"0": "cat", "1": "dog", "2": "bird"}
    hf, info = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "ours",
                                                                            output_loading_info=True)
    assert type(hf).__name__ == hf_class
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x = torch.randn(2, 3, 32, 32)
    assert (hf.eval()(x).logits - model(x).logits).abs().max() <= 1e-5
    hf.save_pretrained(tmp_path / "hf")  # ours -> HF -> ours: bitwise
    for folder in (tmp_path / "ours", tmp_path / "hf"):
        reloaded = load_classifier(folder)
        if arch == "vit_mae":  # comes back as the ViT it was exported as
            assert reloaded.config.encoder.arch == "vit"
            assert (reloaded(x).logits - model(x).logits).abs().max() <= 1e-6
        else:
            assert reloaded.config.encoder == model.config.encoder
        assert reloaded.config.pooling == pooling and reloaded.config.id2label == model.config.id2label
        assert reloaded.state_dict().keys() == model.state_dict().keys()
        assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch, pooling", [("vit", "mean"), ("vit", "map"), ("siglip", "map"), ("vit_mae", "mean"),
                                           ("dinov2", "cls"), ("clip", "cls"), ("deit", "mean")])
@torch.no_grad()
def test_project_format_round_trips(tmp_path, arch, pooling):
    model = tiny_classifier(arch, pooling)
    save_classifier(model, tmp_path)
    assert read_config_json(tmp_path)["format"] == "vit_finetune"
    reloaded = load_classifier(tmp_path)
    assert reloaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_loaded_then_resized_model_saves_and_reloads(tmp_path):
    folder = make_hf_vit_checkpoint(tmp_path / "hf")
    model = load_classifier(folder, image_size=48)
    save_classifier(model, tmp_path / "out")
    hf = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert (hf(x).logits - model(x).logits).abs().max() <= 1e-5


class CreatesMarker:
    """Unpickling this calls open(marker, "w"), i.e. runs code and creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.mark.parametrize("force_unsafe_env", [False, True])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch, force_unsafe_env):
    if force_unsafe_env:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    folder = make_hf_vit_checkpoint(tmp_path / "ckpt", with_processor=False)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"classifier.weight": CreatesMarker(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        read_state_dict(folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_classifier(folder)
    assert not marker.exists()


def test_the_crafted_pickle_is_live(tmp_path):
    """Guard for the test above: a plain unsafe torch.load of the same file does run its code."""
    marker = tmp_path / "pwned"
    torch.save({"w": CreatesMarker(marker)}, tmp_path / "evil.bin")
    torch.load(tmp_path / "evil.bin", weights_only=False)
    assert marker.exists()


def test_plain_tensor_pickle_loads_weights_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    folder = make_hf_siglip_checkpoint(tmp_path / "ckpt", with_processor=False)
    state = read_state_dict(folder / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    model = load_classifier(folder)
    assert torch.equal(model.classifier.weight, state["classifier.weight"])


def test_missing_weights_file_is_named(tmp_path):
    folder = make_hf_vit_checkpoint(tmp_path, with_processor=False)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        load_classifier(folder)
