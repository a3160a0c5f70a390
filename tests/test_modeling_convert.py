"""Table-driven conversion: round trips, strict loading, label-count changes, the hub-id path."""

import json
import logging
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import vit_finetune.modeling.hub as hub
from helpers_hf import make_hf_family_checkpoint, make_hf_siglip_checkpoint, make_hf_vit_checkpoint
from vit_finetune.modeling import (
    CheckpointError,
    ClassifierConfig,
    build_classifier,
    encoder_config_for_size,
    hf_to_ours,
    load_classifier,
    ours_to_hf,
)
from vit_finetune.modeling.convert import ADD_BATCH_DIM
from vit_finetune.modeling.model import param_group
from vit_finetune.modeling.hub import read_config_json

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8
)


def tiny_config(arch: str, pooling: str, num_labels: int = 3, **encoder_fields) -> ClassifierConfig:
    encoder = encoder_config_for_size("tiny", arch=arch, **TINY | encoder_fields)
    return ClassifierConfig(encoder=encoder, pooling=pooling, num_labels=num_labels)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    "arch, pooling, hf_class",
    [
        ("vit", "cls", "ViTForImageClassification"),
        ("vit", "cls", "ViTModel"),
        ("siglip", "mean", "SiglipForImageClassification"),
        ("siglip", "map", "SiglipForImageClassification"),
        ("siglip", "map", "SiglipVisionModel"),
        ("deit", "cls_distill", "DeiTForImageClassificationWithTeacher"),
        ("deit", "cls", "DeiTForImageClassification"),
        ("deit", "cls", "DeiTModel"),
        ("dinov2", "cls_mean", "Dinov2ForImageClassification"),
        ("dinov2", "cls_mean", "Dinov2Model"),
        ("dinov2_with_registers", "cls_mean", "Dinov2WithRegistersForImageClassification"),
        ("clip", "mean", "CLIPForImageClassification"),
        ("clip", "cls", "CLIPVisionModel"),
        ("vit_mae", "mean", "ViTMAEModel"),
        ("vit_mae", "cls", "ViTForImageClassification"),
    ],
)
def test_ours_to_hf_to_ours_is_identity(arch, pooling, hf_class):
    config = tiny_config(arch, pooling)
    state = build_classifier(config).state_dict()
    if "ForImageClassification" not in hf_class:
        state = {k: v for k, v in state.items() if param_group(k) != "classifier"}
    assert_same_tensors(hf_to_ours(ours_to_hf(state, config, hf_class), config), state)


def test_swiglu_mlp_maps_to_dinov2_fused_weights():
    config = tiny_config("dinov2", "cls_mean", use_swiglu_ffn=True)
    state = build_classifier(config).state_dict()
    hf = ours_to_hf(state, config, "Dinov2ForImageClassification")
    fused = hf["dinov2.encoder.layer.0.mlp.weights_in.weight"]  # (2I, D): gate rows, then value rows
    assert fused.shape == (2 * 64, 32) and torch.equal(fused, state["backbone.encoder.layers.0.mlp.w12.weight"])
    assert torch.equal(hf["dinov2.embeddings.mask_token"], torch.zeros(1, 32))  # HF's init; unused by us
    assert_same_tensors(hf_to_ours(hf, config), state)


@pytest.mark.parametrize(
    "make, kwargs, hf_class, dropped",
    [
        (make_hf_vit_checkpoint, {}, "ViTForImageClassification", []),
        (make_hf_vit_checkpoint, {"num_labels": None}, "ViTModel", ["pooler.dense.weight", "pooler.dense.bias"]),
        (make_hf_siglip_checkpoint, {}, "SiglipForImageClassification", []),
        (make_hf_siglip_checkpoint, {"num_labels": None}, "SiglipVisionModel", []),
        (make_hf_family_checkpoint, dict(family="deit", hf_class="DeiTForImageClassificationWithTeacher"),
         "DeiTForImageClassificationWithTeacher", []),
        (make_hf_family_checkpoint, dict(family="deit", hf_class="DeiTModel", num_labels=None), "DeiTModel",
         ["pooler.dense.weight", "pooler.dense.bias"]),
        (make_hf_family_checkpoint, dict(family="dinov2", hf_class="Dinov2ForImageClassification"),
         "Dinov2ForImageClassification", []),  # mask_token: written back as HF initialises it (zeros)
        (make_hf_family_checkpoint, dict(family="dinov2_with_registers", hf_class="Dinov2WithRegistersModel",
                                         num_labels=None, use_swiglu_ffn=True), "Dinov2WithRegistersModel", []),
        (make_hf_family_checkpoint, dict(family="clip", hf_class="CLIPForImageClassification"),
         "CLIPForImageClassification", []),
        (make_hf_family_checkpoint, dict(family="clip_vision_model", hf_class="CLIPVisionModel", num_labels=None),
         "CLIPVisionModel", []),
        (make_hf_family_checkpoint, dict(family="vit_mae", hf_class="ViTMAEModel", num_labels=None), "ViTMAEModel",
         []),
    ],
    ids=["vit", "vit-model", "siglip", "siglip-vision", "deit-teacher", "deit-model", "dinov2",
         "dinov2-registers-swiglu", "clip", "clip-vision", "vit-mae"],
)
def test_hf_file_to_ours_to_hf_is_identity(tmp_path, make, kwargs, hf_class, dropped):
    folder = make(tmp_path, **kwargs)
    file_state = load_file(folder / "model.safetensors")
    config = ClassifierConfig.from_hf_config(read_config_json(folder))
    back = ours_to_hf(hf_to_ours(file_state, config), config, hf_class)
    assert_same_tensors(back, {k: v for k, v in file_state.items() if k not in dropped})


def test_siglip_model_keeps_vision_tower_and_drops_text_tower(tmp_path):
    folder = make_hf_siglip_checkpoint(tmp_path, num_labels=None, with_text_tower=True)
    file_state = load_file(folder / "model.safetensors")
    config = ClassifierConfig.from_hf_config(read_config_json(folder))
    ours = hf_to_ours(file_state, config)
    assert all(k.startswith(("backbone.", "pool.")) for k in ours)
    back = ours_to_hf(ours, config, "SiglipVisionModel")
    vision = {k.removeprefix("vision_model."): v for k, v in file_state.items() if k.startswith("vision_model.")}
    assert_same_tensors(back, vision)


@pytest.mark.parametrize("hf_class, prefix, dropped", [
    ("CLIPModel", "vision_model.", r"text_model\.|logit_scale|_projection"),
    ("ViTMAEForPreTraining", "vit.", r"decoder\."),
])
def test_contrastive_and_pre_training_checkpoints_keep_the_vision_tower(tmp_path, hf_class, prefix, dropped):
    family = "clip" if hf_class == "CLIPModel" else "vit_mae"
    folder = make_hf_family_checkpoint(tmp_path, family, hf_class, num_labels=None)
    file_state = load_file(folder / "model.safetensors")
    config = ClassifierConfig.from_hf_config(read_config_json(folder))
    back = ours_to_hf(hf_to_ours(file_state, config), config, "CLIPVisionModel" if family == "clip" else "ViTMAEModel")
    vision = {k.removeprefix(prefix): v for k, v in file_state.items() if k.startswith(prefix)}
    assert_same_tensors(back, vision)
    assert all(re.search(dropped, k) for k in file_state if not k.startswith(prefix))


def test_reshape_step_maps_siglip_position_table_both_ways(tmp_path):
    folder = make_hf_siglip_checkpoint(tmp_path)
    file_state = load_file(folder / "model.safetensors")
    config = ClassifierConfig.from_hf_config(read_config_json(folder))
    stored = file_state["vision_model.embeddings.position_embedding.weight"]  # (N, D)
    ours = hf_to_ours(file_state, config)
    assert ours["backbone.pos_embed"].shape == (1, *stored.shape)
    assert torch.equal(ours["backbone.pos_embed"][0], stored)
    back = ours_to_hf(ours, config, "SiglipForImageClassification")
    assert torch.equal(back["vision_model.embeddings.position_embedding.weight"], stored)
    assert ADD_BATCH_DIM.to_hf(ADD_BATCH_DIM.to_ours(stored)).shape == stored.shape


def test_position_table_in_our_layout_is_refused_for_siglip(tmp_path):
    folder = make_hf_siglip_checkpoint(tmp_path)
    key = "vision_model.embeddings.position_embedding.weight"
    edit_weights(folder, lambda s: s.update({key: s[key].unsqueeze(0)}))  # (1, N, D): not what SigLIP writes
    with pytest.raises(CheckpointError, match=f"{key}: \\(1, 16, 32\\) != expected \\(16, 32\\)"):
        load_classifier(folder)


@pytest.fixture
def vit_folder(tmp_path):
    return make_hf_vit_checkpoint(tmp_path / "vit")


def edit_weights(folder, edit) -> None:
    path = folder / "model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path)


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda s: s.pop("vit.encoder.layer.1.output.dense.weight"), "vit.encoder.layer.1.output.dense.weight"),
        (lambda s: s.update({"vit.encoder.layer.0.extra.weight": torch.zeros(2)}), "vit.encoder.layer.0.extra.weight"),
        (
            lambda s: s.update({"vit.encoder.layer.0.attention.attention.key.weight": torch.zeros(32, 31)}),
            "vit.encoder.layer.0.attention.attention.key.weight",
        ),
        (lambda s: s.update({"classifier.bias": torch.zeros(4)}), "classifier.bias"),
        (lambda s: s.pop("classifier.bias"), "classifier.bias"),
    ],
    ids=["missing", "unexpected", "mis-shaped", "mis-shaped-head", "half-a-head"],
)
def test_strict_loading_names_the_bad_tensor_and_file(vit_folder, edit, key):
    edit_weights(vit_folder, edit)
    with pytest.raises(CheckpointError, match=key) as info:
        load_classifier(vit_folder)
    assert isinstance(info.value, ValueError)
    assert "model.safetensors" in str(info.value)


def test_project_format_is_loaded_strictly(tmp_path):
    model = build_classifier(tiny_config("vit", "mean"))
    folder = hub.save_classifier(model, tmp_path)
    edit_weights(folder, lambda s: s.pop("backbone.norm.bias"))
    with pytest.raises(CheckpointError, match="backbone.norm.bias"):
        load_classifier(folder)


@pytest.mark.parametrize("edit, fragment", [
    (lambda raw: raw["encoder"].update(position_layout="parameter"), "position_layout"),
    (lambda raw: raw.update(id2label={"0": "a"}), "id2label"),
])
def test_project_format_config_errors_name_the_file(tmp_path, edit, fragment):
    folder = hub.save_classifier(build_classifier(tiny_config("vit", "mean")), tmp_path)
    raw = read_config_json(folder)
    edit(raw)
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=f"config.json: not a model config this project reads: .*{fragment}"):
        load_classifier(folder)


def test_new_label_count_keeps_encoder_and_creates_new_head(vit_folder, caplog):
    file_state = load_file(vit_folder / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="vit_finetune"):
        model = load_classifier(vit_folder, num_labels=5)
    assert "new classifier head for 5 labels" in caplog.text
    assert model.classifier.weight.shape == (5, 32)
    assert model.config.id2label == {i: f"LABEL_{i}" for i in range(5)}
    back = ours_to_hf(model.state_dict(), model.config, "ViTForImageClassification")
    for key in file_state:
        if not key.startswith("classifier."):
            assert torch.equal(back[key], file_state[key]), key


def test_same_labels_keep_the_head_and_new_names_replace_it(vit_folder, caplog):
    file_state = load_file(vit_folder / "model.safetensors")
    kept = load_classifier(vit_folder, id2label={0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    assert torch.equal(kept.classifier.weight, file_state["classifier.weight"])
    with caplog.at_level(logging.WARNING, logger="vit_finetune"):
        renamed = load_classifier(vit_folder, id2label={0: "cat", 1: "dog", 2: "bird"})
    assert "new classifier head for 3 labels" in caplog.text
    assert renamed.config.label2id == {"cat": 0, "dog": 1, "bird": 2}
    assert not torch.equal(renamed.classifier.weight, file_state["classifier.weight"])


def test_checkpoint_without_classifier_gets_a_new_head(tmp_path, caplog):
    folder = make_hf_siglip_checkpoint(tmp_path, num_labels=None, with_text_tower=True)
    with caplog.at_level(logging.WARNING, logger="vit_finetune"):
        model = load_classifier(folder, id2label={0: "a", 1: "b", 2: "c", 3: "d"})
    assert "checkpoint: no classifier" in caplog.text
    assert model.classifier.weight.shape == (4, 32)


def test_hub_id_is_resolved_through_snapshot_download(monkeypatch, tmp_path):
    folder = make_hf_vit_checkpoint(tmp_path / "snapshot", num_labels=None)
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(folder)

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    model = load_classifier("google/vit-base-patch16-224-in21k", num_labels=10)
    assert [c[0] for c in calls] == ["google/vit-base-patch16-224-in21k"]
    assert {"config.json", "*.safetensors", "preprocessor_config.json"} <= set(calls[0][1])
    assert not any(p.endswith((".bin", ".pt")) for p in calls[0][1])
    assert model.config.num_labels == 10
