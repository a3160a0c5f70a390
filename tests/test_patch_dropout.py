"""PatchDropout: fewer patch tokens while training, identity in eval, prefix (CLS) token kept."""

import pytest
import torch

from vit_finetune.modeling import ClassifierConfig, build_classifier, encoder_config_for_size
from vit_finetune.modeling.layers import PatchDropout


def test_training_keeps_prefix_and_a_random_subset_of_patches():
    torch.manual_seed(0)
    drop = PatchDropout(0.5, num_prefix_tokens=1).train()
    x = torch.arange(2 * 9 * 1, dtype=torch.float32).view(2, 9, 1).repeat(1, 1, 4)  # token i holds value i
    out = drop(x)  # (2, 1 + 4, 4)
    assert out.shape == (2, 5, 4)
    assert torch.equal(out[:, 0], x[:, 0])  # CLS kept first
    for b in range(2):
        kept = out[b, 1:, 0].tolist()
        assert len(set(kept)) == 4 and set(kept) <= set(x[b, 1:, 0].tolist())  # distinct real patches


def test_eval_is_identity_and_model_output_unchanged():
    encoder = encoder_config_for_size("cifar-tiny", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, patch_dropout=0.5)
    model = build_classifier(ClassifierConfig(encoder=encoder, pooling="mean", num_labels=3)).eval()
    plain = build_classifier(ClassifierConfig(encoder=encoder.__class__(**{**encoder.__dict__, "patch_dropout": 0.0}),
                                              pooling="mean", num_labels=3)).eval()
    plain.load_state_dict(model.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(pixels).logits, plain(pixels).logits)
    model.train()
    assert model.forward_features(pixels).shape[1] == 1 + 32  # CLS + half of the 64 patches


def test_out_of_range_rate_is_refused():
    with pytest.raises(ValueError, match="patch_dropout"):
        encoder_config_for_size("cifar-tiny", patch_dropout=1.0)
