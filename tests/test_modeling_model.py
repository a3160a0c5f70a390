"""The from-scratch modules themselves: configs, gradients, dropout, the two attention implementations, positions."""

import json

import pytest
import torch

from helpers_hf import make_hf_siglip_checkpoint, make_hf_vit_checkpoint
from vit_finetune.modeling import ClassifierConfig, EncoderConfig, build_classifier, encoder_config_for_size
from vit_finetune.modeling.layers import Attention, AttentionPoolingHead, attend, set_attn_implementation
from vit_finetune.modeling.positions import resize_pos_embed

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8
)


def tiny_classifier(arch: str, pooling: str, **encoder_overrides) -> torch.nn.Module:
    encoder = encoder_config_for_size("tiny", arch=arch, **(TINY | encoder_overrides))
    torch.manual_seed(0)
    return build_classifier(ClassifierConfig(encoder=encoder, pooling=pooling, num_labels=3))


def test_named_sizes_come_from_the_table():
    base = encoder_config_for_size("base")
    sizes = (base.hidden_size, base.num_hidden_layers, base.num_attention_heads, base.intermediate_size)
    assert sizes == (768, 12, 12, 3072)
    assert (base.layer_norm_eps, base.hidden_act, base.class_token) == (1e-12, "gelu", True)
    large = encoder_config_for_size("L/32")
    assert (large.hidden_size, large.num_hidden_layers, large.patch_size) == (1024, 24, 32)
    cifar = encoder_config_for_size("cifar-small")
    assert (cifar.image_size, cifar.patch_size, cifar.num_patches) == (32, 4, 64)
    siglip = encoder_config_for_size("base", arch="siglip")
    assert (siglip.layer_norm_eps, siglip.hidden_act, siglip.class_token) == (1e-6, "gelu_pytorch_tanh", False)
    with pytest.raises(ValueError, match="unknown model size"):
        encoder_config_for_size("gigantic")


def test_encoder_config_from_each_hf_model_type(tmp_path):
    folders = {
        "vit": make_hf_vit_checkpoint(tmp_path / "a", with_processor=False),
        "siglip": make_hf_siglip_checkpoint(tmp_path / "b", with_processor=False),
        "siglip_vision_model": make_hf_siglip_checkpoint(tmp_path / "c", num_labels=None, with_processor=False),
    }
    for model_type, folder in folders.items():
        raw = json.loads((folder / "config.json").read_text())
        assert raw["model_type"] == model_type
        config = EncoderConfig.from_hf_config(raw)
        assert (config.hidden_size, config.num_hidden_layers, config.image_size, config.patch_size) == (32, 2, 32, 8)
        assert config.arch == ("vit" if model_type == "vit" else "siglip")
        assert config.layer_norm_eps == (1e-12 if model_type == "vit" else 1e-6)


def test_id2label_has_int_keys_and_reads_json_strings_back():
    with pytest.raises(ValueError, match="id2label keys must be the ints 0..1"):
        ClassifierConfig(num_labels=2, id2label={"0": "a", "1": "b"})
    config = ClassifierConfig(num_labels=2, id2label={0: "a", 1: "b"})
    assert config.label2id == {"a": 0, "b": 1}
    assert ClassifierConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_cls_pooling_needs_a_cls_token():
    with pytest.raises(ValueError, match="CLS token"):
        ClassifierConfig(encoder=encoder_config_for_size("tiny", arch="siglip"), pooling="cls")


@pytest.mark.parametrize("arch, pooling", [("vit", "cls"), ("vit", "mean"), ("siglip", "mean"), ("siglip", "map")])
def test_every_parameter_gets_a_gradient(arch, pooling):
    model = tiny_classifier(arch, pooling, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).train()
    out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]))
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_dropout_is_off_in_eval_and_on_in_train():
    model = tiny_classifier("vit", "cls", hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)
    model.train()
    assert not torch.equal(model(x).logits, model(x).logits)


def outputs_and_gradients(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    out = model(x, labels=labels)
    out.loss.backward()
    return [out.logits.detach()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("arch, pooling", [("vit", "cls"), ("vit", "mean"), ("siglip", "map")])
def test_sdpa_and_eager_give_the_same_outputs_and_gradients(arch, pooling):
    model = tiny_classifier(arch, pooling).train()
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    results = {}
    for name in ("sdpa", "eager"):
        set_attn_implementation(model, name)
        results[name] = outputs_and_gradients(model, x, labels)
    for fused, eager in zip(results["sdpa"], results["eager"], strict=True):
        assert (fused - eager).abs().max() < 1e-5


def test_set_attn_implementation_reaches_every_attention_module():
    model = tiny_classifier("siglip", "map")
    attention = [m for m in model.modules() if isinstance(m, (Attention, AttentionPoolingHead))]
    assert len(attention) == 3 and all(m.attn_implementation == "sdpa" for m in attention)  # the default
    set_attn_implementation(model, "eager")
    assert all(m.attn_implementation == "eager" for m in attention)
    with pytest.raises(ValueError, match="unknown attn_implementation 'flash'"):
        set_attn_implementation(model, "flash")


@pytest.mark.parametrize("shape", [(4, 2, 17, 64), (2, 2, 130, 16), (2, 2, 197, 32)])
def test_attention_implementations_agree_in_output_and_gradient(shape):
    torch.manual_seed(0)
    q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
    grad_out = torch.randn(shape)
    results = []
    for implementation in ("sdpa", "eager"):
        out = attend(q, k, v, 0.0, implementation)
        grads = torch.autograd.grad(out, (q, k, v), grad_out)
        results.append((out, *grads))
    for fused, eager in zip(*results):
        assert (fused - eager).abs().max() < 1e-5


def test_loss_is_cross_entropy():
    model = tiny_classifier("vit", "cls").eval()
    x, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    out = model(x, labels=labels)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert model(x).loss is None


def test_wrong_input_size_needs_interpolation():
    model = tiny_classifier("vit", "cls").eval()
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model(torch.randn(1, 3, 48, 48))
    assert model(torch.randn(1, 3, 48, 48), interpolate_pos_encoding=True).logits.shape == (1, 3)


def test_resize_pos_embed_keeps_cls_and_is_identity_at_same_grid():
    table = torch.randn(1, 1 + 16, 8)
    assert resize_pos_embed(table, (4, 4), num_prefix_tokens=1) is table
    resized = resize_pos_embed(table, (6, 6), num_prefix_tokens=1)
    assert resized.shape == (1, 1 + 36, 8)
    assert torch.equal(resized[:, :1], table[:, :1])
    constant = torch.ones(1, 16, 8)  # bicubic keeps a constant field constant
    assert torch.allclose(resize_pos_embed(constant, (7, 7), num_prefix_tokens=0), torch.ones(1, 49, 8))
