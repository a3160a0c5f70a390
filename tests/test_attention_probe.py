"""The training setup's choice of attention implementation: the measured probe and the config key."""

import logging

import pytest
import torch

import vit_finetune.training.attention_probe as probe
from train_helpers import TINY_MODEL
from vit_finetune.config import build_model_section
from vit_finetune.modeling.config import encoder_config_for_size
from vit_finetune.modeling.layers import Attention, AttentionPoolingHead
from vit_finetune.training.model_setup import build_model, choose_attn_implementation

CPU = torch.device("cpu")
LABELS = {0: "a", 1: "b", 2: "c"}


class Args:
    """The TrainingArguments fields the attention choice reads."""

    def __init__(self, batch_size: int = 4):
        self.per_device_train_batch_size, self.device, self.bf16, self.fp16 = batch_size, CPU, False, False


def tiny_encoder(**overrides):
    fields = {k: v for k, v in TINY_MODEL.items() if k not in ("arch", "size", "pooling")}
    return encoder_config_for_size("cifar-tiny", **(fields | overrides))


def fake_pass_seconds(monkeypatch, sdpa: float, eager: float) -> None:
    """Replace the timer: every pass takes `sdpa` / `eager` seconds per sample."""
    def timed_pass(layer, x, autocast_dtype):
        return (sdpa if layer.attn.attn_implementation == "sdpa" else eager) * len(x)

    monkeypatch.setattr(probe, "timed_pass", timed_pass)
    probe.probe_attn_implementation.cache_clear()


def attention_modules(model):
    return [m for m in model.modules() if isinstance(m, (Attention, AttentionPoolingHead))]


def test_probe_times_both_at_the_run_shapes_and_leaves_the_rng_alone():
    probe.probe_attn_implementation.cache_clear()
    state = torch.get_rng_state()
    result = probe.probe_attn_implementation(tiny_encoder(), 4, 17, CPU, None)
    assert torch.equal(torch.get_rng_state(), state)
    assert result.choice in ("sdpa", "eager") and set(result.seconds) == {"sdpa", "eager"}
    assert all(s > 0 for s in result.seconds.values())
    assert 1 <= result.batch_size <= 4 and result.num_tokens == 17  # fewer samples only on a very slow machine
    assert probe.probe_attn_implementation(tiny_encoder(), 4, 17, CPU, None) is result  # measured once


@pytest.mark.parametrize("eager, expected", [(0.90, "eager"), (0.97, "sdpa"), (1.10, "sdpa")])
def test_eager_replaces_sdpa_only_when_clearly_faster(monkeypatch, eager, expected):
    fake_pass_seconds(monkeypatch, sdpa=1e-3, eager=eager * 1e-3)
    assert probe.probe_attn_implementation(tiny_encoder(), 8, 17, CPU, None).choice == expected


def test_eager_must_win_every_round(monkeypatch):
    fake_pass_seconds(monkeypatch, sdpa=1e-3, eager=0.5e-3)
    real = probe.timed_pass
    passes = []

    def one_eager_pass_disturbed(layer, x, autocast_dtype):
        passes.append(layer.attn.attn_implementation)
        disturbed = layer.attn.attn_implementation == "eager" and passes.count("eager") == 4
        return real(layer, x, autocast_dtype) * (3 if disturbed else 1)

    monkeypatch.setattr(probe, "timed_pass", one_eager_pass_disturbed)
    result = probe.probe_attn_implementation(tiny_encoder(), 8, 17, CPU, None)
    assert (result.choice, result.eager_rounds) == ("sdpa", probe.PROBE_ROUNDS - 1)


def test_probe_batch_is_cut_to_the_time_budget(monkeypatch):
    fake_pass_seconds(monkeypatch, sdpa=0.01, eager=0.01)  # 1.28 s for a whole batch of 128
    result = probe.probe_attn_implementation(tiny_encoder(), 128, 17, CPU, None)
    assert result.batch_size == int(probe.PASS_SECONDS / 0.01)


@pytest.mark.parametrize("pooling", ["mean", "map"])
def test_auto_applies_the_probe_choice_to_every_attention_module(monkeypatch, caplog, pooling):
    fake_pass_seconds(monkeypatch, sdpa=2e-3, eager=1e-3)
    section = build_model_section(TINY_MODEL | {"pooling": pooling, "patch_dropout": 0.5})
    model = build_model(section, LABELS)
    with caplog.at_level(logging.INFO, logger="vit_finetune"):
        assert choose_attn_implementation(model, section, Args()) == "eager"
    assert "attention for training: eager (one layer, batch 4 x 9 tokens" in caplog.text  # 1 + 16 // 2 tokens
    assert "eager ahead in 4 of 4 rounds" in caplog.text
    assert all(m.attn_implementation == "eager" for m in attention_modules(model))


@pytest.mark.parametrize("name", ["sdpa", "eager"])
def test_an_explicit_choice_is_applied_without_probing(monkeypatch, name):
    monkeypatch.setattr(probe, "timed_pass", lambda *args: pytest.fail("probed"))
    probe.probe_attn_implementation.cache_clear()
    section = build_model_section(TINY_MODEL | {"attn_implementation": name})
    model = build_model(section, LABELS)
    assert choose_attn_implementation(model, section, Args()) == name
    assert all(m.attn_implementation == name for m in attention_modules(model))


def _agree_in_process(rank: int, port: int, results) -> None:
    """One of two gloo processes: rank 0 proposes eager, rank 1 sdpa."""
    import torch.distributed as dist

    from vit_finetune.training.model_setup import agreed_across_processes

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results[rank] = agreed_across_processes("eager" if rank == 0 else "sdpa")
    finally:
        dist.destroy_process_group()


def test_processes_of_one_run_use_the_first_process_choice():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.get_context("spawn").Manager().dict()
    mp.spawn(_agree_in_process, args=(port, results), nprocs=2, join=True)
    assert dict(results) == {0: "eager", 1: "eager"}
