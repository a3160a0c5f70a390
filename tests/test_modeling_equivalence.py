"""Our encoder vs Hugging Face, fp32, on random HF models saved with save_pretrained and loaded
through `load_classifier(dir)` (the same path a hub id takes after download): max |Δ| <= 1e-5
on the final hidden states, the logits and (SigLIP) the MAP head's pooled output."""

import pytest
import torch
import transformers

from helpers_hf import make_hf_siglip_checkpoint, make_hf_vit_checkpoint
from vit_finetune.modeling import load_classifier

TOL = 1e-5
B16_224 = dict(image_size=224, patch_size=16, hidden_size=768, layers=12, heads=12, intermediate=3072)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def pixels(batch: int, size: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    return make_hf_vit_checkpoint(tmp_path_factory.mktemp("tiny_vit"))


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory):
    return make_hf_siglip_checkpoint(tmp_path_factory.mktemp("tiny_siglip"))


@pytest.fixture(scope="module")
def vit_b16(tmp_path_factory):
    return make_hf_vit_checkpoint(tmp_path_factory.mktemp("vit_b16"), num_labels=10, **B16_224)


@pytest.fixture(scope="module")
def siglip_b16(tmp_path_factory):
    return make_hf_siglip_checkpoint(tmp_path_factory.mktemp("siglip_b16"), num_labels=10, **B16_224)


@torch.no_grad()
def hf_reference(folder, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One HF forward: logits, final hidden states (last layer + final LN) and SigLIP's MAP output."""
    hf = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    vit = hf.config.model_type == "vit"
    interpolate = x.shape[-1] != (hf.config.image_size if vit else hf.config.vision_config.image_size)
    out = hf(x, interpolate_pos_encoding=interpolate, output_hidden_states=True)
    final_norm = hf.vit.layernorm if vit else hf.vision_model.post_layernorm
    ref = {"logits": out.logits, "tokens": final_norm(out.hidden_states[-1])}
    if not vit:
        ref["map"] = hf.vision_model.head(ref["tokens"])
    return ref


@torch.no_grad()
def check_against_hf(folder, size: int, batch: int, image_size: int | None = None) -> None:
    """Our tokens / logits / MAP pooling vs HF; `image_size` resizes positions at load, else at forward."""
    x = pixels(batch, size)
    ref = hf_reference(folder, x)
    ours = load_classifier(folder, image_size=image_size)
    tokens = ours.forward_features(x, interpolate_pos_encoding=image_size is None)
    assert max_diff(tokens, ref["tokens"]) <= TOL
    assert max_diff(ours.forward_head(tokens), ref["logits"]) <= TOL
    if "map" in ref:
        ours_map = load_classifier(folder, pooling="map", image_size=image_size)
        assert max_diff(ours_map.forward_head(tokens, pre_logits=True), ref["map"]) <= TOL


@pytest.mark.parametrize("family", ["vit", "siglip"])
@torch.no_grad()
def test_tiny_forward_matches_hf_public_outputs(family, tiny_vit, tiny_siglip):
    """Plain `forward` vs HF's own `forward` and base-model outputs (no HF internals used)."""
    folder = tiny_vit if family == "vit" else tiny_siglip
    hf = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    base = hf.vit if family == "vit" else hf.vision_model
    ours = load_classifier(folder)
    x = pixels(4, 32)
    assert ours.config.pooling == ("cls" if family == "vit" else "mean")
    assert max_diff(ours(x).logits, hf(x).logits) <= TOL
    assert max_diff(ours.forward_features(x), base(x).last_hidden_state) <= TOL
    if family == "siglip":
        ours_map = load_classifier(folder, pooling="map")
        pooled = ours_map.forward_head(ours_map.forward_features(x), pre_logits=True)
        assert max_diff(pooled, base(x).pooler_output) <= TOL


@pytest.mark.parametrize("family", ["vit", "siglip"])
def test_tiny_matches_hf(family, tiny_vit, tiny_siglip):
    check_against_hf(tiny_vit if family == "vit" else tiny_siglip, size=32, batch=4)


@pytest.mark.parametrize("at_load", [False, True], ids=["forward-time", "load-time"])
@pytest.mark.parametrize("family", ["vit", "siglip"])
def test_tiny_interpolated_positions_match_hf(family, at_load, tiny_vit, tiny_siglip):
    folder = tiny_vit if family == "vit" else tiny_siglip
    check_against_hf(folder, size=56, batch=2, image_size=56 if at_load else None)


def test_vit_b16_224_matches_hf(vit_b16):
    check_against_hf(vit_b16, size=224, batch=1)


def test_vit_b16_at_384_matches_hf_interpolation(vit_b16):
    check_against_hf(vit_b16, size=384, batch=1, image_size=384)


def test_siglip_b16_224_matches_hf(siglip_b16):
    check_against_hf(siglip_b16, size=224, batch=1)


def test_siglip_b16_at_256_matches_hf_interpolation(siglip_b16):
    check_against_hf(siglip_b16, size=256, batch=1, image_size=256)
