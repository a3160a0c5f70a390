"""The from-scratch modules themselves: configs, gradients, dropout, the two attention implementations, positions."""

import json

import pytest
import torch

from helpers_hf import mae_sin_cos_positions, make_hf_siglip_checkpoint, make_hf_vit_checkpoint
from vit_finetune.bench.encoder import compare_encoder_speed
from vit_finetune.modeling import ClassifierConfig, EncoderConfig, build_classifier, encoder_config_for_size
from vit_finetune.bench.memory import saved_activation_bytes
from vit_finetune.modeling.layers import Attention, AttentionPoolingHead, DropPath, attend, set_attn_implementation
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


FAMILY_POOLINGS = [("vit", "cls"), ("vit", "mean"), ("siglip", "mean"), ("siglip", "map"), ("deit", "cls_distill"),
                   ("dinov2", "cls_mean"), ("dinov2_with_registers", "cls_mean"), ("clip", "mean"), ("clip", "cls"),
                   ("vit_mae", "mean")]


@pytest.mark.parametrize("arch, pooling", FAMILY_POOLINGS)
def test_every_parameter_gets_a_gradient(arch, pooling):
    model = tiny_classifier(arch, pooling, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                            drop_path_rate=0.1).train()
    out = model(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 2, 1, 0]))
    out.loss.backward()
    # CLIPForImageClassification averages the encoder output: post_layernorm serves the CLS pooling only
    unused = {"backbone.norm.weight", "backbone.norm.bias"} if (arch, pooling) == ("clip", "mean") else set()
    for name, param in model.named_parameters():
        assert (param.grad is not None and param.grad.abs().sum() > 0) != (name in unused), name


def test_family_tokens_and_heads_have_their_shapes():
    deit, dinov2 = tiny_classifier("deit", "cls_distill"), tiny_classifier("dinov2_with_registers", "cls_mean")
    assert deit.backbone.pos_embed.shape == (1, 2 + 16, 32) and deit.distillation_classifier.weight.shape == (3, 32)
    assert dinov2.backbone.reg_token.shape == (1, 4, 32) and dinov2.backbone.pos_embed.shape == (1, 1 + 16, 32)
    assert dinov2.classifier.weight.shape == (3, 2 * 32)
    assert dinov2.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 1 + 4 + 16, 32)
    clip = tiny_classifier("clip", "mean")
    assert clip.backbone.patch_embed.proj.bias is None and isinstance(clip.backbone.pre_norm, torch.nn.LayerNorm)


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


@pytest.mark.parametrize("arch, pooling", [("vit", "cls"), ("vit", "mean"), ("siglip", "map"), ("deit", "cls_distill"),
                                           ("dinov2_with_registers", "cls_mean"), ("clip", "cls")])
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


@pytest.mark.parametrize("arch", ["vit", "siglip"])
def test_encoder_benchmark_runs(arch):
    """Smoke test only (no timing assertion): both encoders build from one config and train a step."""
    result = compare_encoder_speed(arch, "cifar-tiny", image_size=32, batch_size=2, steps=1, warmup=0)
    assert result["ours_images_per_s"] > 0 and result["hf_images_per_s"] > 0 and result["ratio"] > 0


def test_mae_random_init_has_the_fixed_sin_cos_positions_of_hf():
    import transformers

    config = transformers.ViTMAEConfig(hidden_size=32, image_size=32, patch_size=8, num_hidden_layers=1,
                                       num_attention_heads=4, intermediate_size=64)
    hf_table = mae_sin_cos_positions(transformers.ViTMAEModel(config).embeddings)
    assert hf_table.abs().sum() > 0
    assert torch.equal(tiny_classifier("vit_mae", "mean").backbone.pos_embed, hf_table)


# ---- stochastic depth --------------------------------------------------------------------------------


def test_drop_path_rates_rise_linearly_over_depth():
    model = tiny_classifier("vit", "cls", num_hidden_layers=5, drop_path_rate=0.2)
    rates = [layer.drop_path.prob for layer in model.backbone.encoder.layers]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_drop_path_drops_whole_samples_at_its_rate_and_keeps_the_mean():
    drop = DropPath(0.3).train()
    torch.manual_seed(0)
    x = torch.ones(20_000, 5, 4)
    out = drop(x)
    dropped = (out == 0).all(dim=(1, 2))
    assert ((out == 0) == dropped[:, None, None]).all()  # per sample: all of it or none of it
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert torch.allclose(out[~dropped], torch.full_like(out[~dropped], 1 / 0.7))
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)
    assert drop.eval()(x) is x


def test_drop_path_is_off_in_eval_and_on_in_train():
    plain, dropped = tiny_classifier("dinov2", "cls_mean"), tiny_classifier("dinov2", "cls_mean", drop_path_rate=0.5)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), dropped.state_dict().values()))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x).logits, dropped.eval()(x).logits)
        torch.manual_seed(0)
        first = dropped.train()(x).logits
        assert not torch.equal(first, plain.train()(x).logits)
        assert not torch.equal(first, dropped(x).logits)


# ---- activation checkpointing ------------------------------------------------------------------------


def seeded_gradients(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    torch.manual_seed(1)  # the same dropout draws for both runs
    return outputs_and_gradients(model, x, labels)


@pytest.mark.parametrize("arch, pooling", [("vit", "cls"), ("dinov2_with_registers", "cls_mean")])
def test_checkpointing_keeps_gradients_and_cuts_saved_activations(arch, pooling):
    model = tiny_classifier(arch, pooling, num_hidden_layers=4, hidden_dropout_prob=0.1,
                            attention_probs_dropout_prob=0.1, drop_path_rate=0.2).train()
    x, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    plain, plain_bytes = seeded_gradients(model, x, labels), saved_activation_bytes(model, x, labels)
    model.activation_checkpointing_enable(every_n_layers=1)  # what the Trainer calls
    assert model.is_activation_checkpointing and model.supports_gradient_checkpointing
    checkpointed, checkpointed_bytes = seeded_gradients(model, x, labels), saved_activation_bytes(model, x, labels)
    for a, b in zip(plain, checkpointed, strict=True):
        assert (a - b).abs().max() <= 1e-6
    assert checkpointed_bytes < 0.5 * plain_bytes
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing and saved_activation_bytes(model, x, labels) == plain_bytes


def test_checkpointing_every_second_layer_saves_between_none_and_all():
    model = tiny_classifier("vit", "cls", num_hidden_layers=4).train()
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    sizes = []
    for every in (None, 2, 1):
        if every:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False},
                                                every_n_layers=every)
        sizes.append(saved_activation_bytes(model, x, labels))
    assert sizes[0] > sizes[1] > sizes[2]
