"""Fine-tuning methods: the `finetune:` config section, linear probe, partial freezing, parameter groups and
layer-wise learning rates (read back from the optimizer the Trainer built)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainingArguments

from data_helpers import make_image_folder
from helpers_hf import make_hf_vit_checkpoint
from train_helpers import tiny_run_tree, weights
from vit_finetune.config import run_config_from_dict
from vit_finetune.finetune_config import FinetuneConfig
from vit_finetune.modeling import load_classifier
from vit_finetune.training.finetune import prepare_model
from vit_finetune.training.run import train
from vit_finetune.training.trainer import ClassifierTrainer
from vit_finetune.typed import ConfigError

CLASSES = ("red", "green", "blue", "yellow")
LABELS = dict(enumerate(sorted(CLASSES)))
LAYERS = 2  # of the start checkpoint


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), classes=CLASSES, per_class=12)


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A small HF ViT checkpoint (CLS pooling, 2 layers) that the runs fine-tune."""
    return make_hf_vit_checkpoint(tmp_path_factory.mktemp("start"), num_labels=3, layers=LAYERS)


def finetune_tree(data_dir, output_dir, start, finetune: dict, **training) -> dict:
    tree = tiny_run_tree(data_dir, output_dir, **{"num_train_epochs": 1, **training})
    tree["model"] = {"checkpoint": str(start)}
    tree["finetune"] = finetune
    return tree


@pytest.mark.parametrize("finetune, message", [
    ({"method": "probe"}, "finetune.method: must be one of"),
    ({"method": "freeze"}, "finetune.trainable_blocks: required"),
    ({"trainable_blocks": 2}, "finetune.trainable_blocks: applies only to finetune.method: freeze"),
    ({"method": "freeze", "trainable_blocks": -1}, "finetune.trainable_blocks: must be >= 0"),
    ({"lora": {"rank": 4}}, "finetune.lora: applies only to finetune.method: lora"),
    ({"method": "lora", "lora": {"rank": 0}}, "finetune.lora.rank: must be >= 1"),
    ({"method": "lora", "lora": {"dropout": 1.0}}, "finetune.lora.dropout: must be in"),
    ({"method": "lora", "lora": {"target_modules": ["query"]}}, "finetune.lora.target_modules: expected"),
    ({"method": "lora", "lora": {"r": 4}}, "finetune.lora: unknown key"),
    ({"layer_decay": 0}, "finetune.layer_decay: must be in (0, 1]"),
    ({"layer_decay": 1.5}, "finetune.layer_decay: must be in (0, 1]"),
    ({"ema_decay": 1.0}, "finetune.ema_decay: must be in (0, 1)"),
    ({"filter_bias_and_bn": "yes"}, "finetune.filter_bias_and_bn: expected bool"),
    ({"dropout": 0.1}, "finetune: unknown key"),
])
def test_bad_finetune_settings_are_refused_naming_the_key(finetune, message):
    with pytest.raises(ConfigError) as err:
        run_config_from_dict({"finetune": finetune})
    assert message in str(err.value)


def test_finetune_section_defaults_and_round_trip():
    run = run_config_from_dict({"finetune": {"method": "lora", "layer_decay": "0.75", "ema_decay": 0.999}})
    assert run.finetune.lora.rank == 8 and run.finetune.lora.target_modules == ("qkv", "proj")
    assert run.finetune.layer_decay == 0.75 and run.finetune.filter_bias_and_bn
    assert run_config_from_dict(run.to_dict()).finetune == run.finetune
    assert run_config_from_dict({}).finetune == FinetuneConfig()  # a full fine-tune


def test_freeze_more_layers_than_the_model_has_is_refused(start):
    model = load_classifier(start, id2label=LABELS)
    with pytest.raises(ConfigError, match="finetune.trainable_blocks: 3 is more than the model's 2 encoder layers"):
        prepare_model(model, FinetuneConfig(method="freeze", trainable_blocks=3))


def record_forward(module, records: list) -> None:
    module.register_forward_hook(lambda m, args, out: records.append((m.training, out.requires_grad)))


def test_linear_probe_encoder_runs_in_eval_mode_without_autograd(start):
    model = prepare_model(load_classifier(start, id2label=LABELS), FinetuneConfig(method="linear_probe"))
    backbone, head = [], []
    record_forward(model.backbone, backbone)
    record_forward(model.classifier, head)
    model.train()  # as the Trainer does before every step
    model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1])).loss.backward()
    assert backbone == [(False, False)]  # eval mode, and no graph: the backward stops at the head
    assert head == [(True, True)]
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.classifier.parameters())


def test_freeze_keeps_the_first_layers_out_of_the_graph(start):
    model = prepare_model(load_classifier(start, id2label=LABELS), FinetuneConfig(method="freeze", trainable_blocks=1))
    layers = [[] for _ in range(LAYERS)]
    for layer, records in zip(model.backbone.encoder.layers, layers):
        record_forward(layer, records)
    model.train()
    model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1])).loss.backward()
    assert layers == [[(True, False)], [(True, True)]]
    assert all(p.grad is None for p in model.backbone.encoder.layers[0].parameters())
    assert all(p.grad is not None for p in model.backbone.encoder.layers[1].parameters())
    assert model.backbone.pos_embed.grad is None and model.backbone.norm.weight.grad is not None


def encoder_keys(state: dict) -> list[str]:
    return [key for key in state if not key.startswith("classifier.")]


def test_linear_probe_leaves_every_encoder_tensor_bitwise_unchanged(data_dir, start, tmp_path):
    out = tmp_path / "run"
    result = train(run_config_from_dict(finetune_tree(data_dir, out, start, {"method": "linear_probe"})))
    before, after = weights(start), weights(out)
    assert len(encoder_keys(after)) == len(encoder_keys(before)) > 10
    for key in encoder_keys(after):
        assert torch.equal(after[key], before[key]), key
    head = load_classifier(out).classifier
    assert not torch.equal(after["classifier.weight"], load_classifier(start, id2label=LABELS).classifier.weight)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == head.weight.numel() + head.bias.numel() == result.metrics[
        "trainable_parameters"]
    assert metrics["total_parameters"] == sum(p.numel() for p in load_classifier(out).parameters())
    # AdamW keeps two moments and a step count for each of the two head tensors, nothing for the encoder
    assert metrics["optimizer_state_elements"] == 2 * metrics["trainable_parameters"] + 2
    (checkpoint,) = out.glob("checkpoint-*")
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert len(saved["state"]) == 2
    assert sum(t.numel() for s in saved["state"].values() for t in s.values()) == metrics["optimizer_state_elements"]


def test_freeze_keeps_the_first_layers_bitwise_and_trains_the_last(data_dir, start, tmp_path):
    out = tmp_path / "run"
    train(run_config_from_dict(finetune_tree(data_dir, out, start, {"method": "freeze", "trainable_blocks": 1},
                                             weight_decay=0.01)))
    before, after = weights(start), weights(out)
    frozen = [k for k in after if k.startswith(("vit.embeddings.", "vit.encoder.layer.0."))]
    trained = [k for k in after if k.startswith(("vit.encoder.layer.1.", "vit.layernorm.", "classifier."))]
    assert len(frozen) == 4 + 16 and len(trained) == 16 + 2 + 2  # cls, patch w/b, positions; 16 per layer
    assert set(frozen) | set(trained) == set(after)
    for key in frozen:
        assert torch.equal(after[key], before[key]), key
    for key in trained:
        assert not torch.equal(after[key], before.get(key, torch.zeros(0))), key


def depth_by_name(name: str) -> int:
    """The test's own reading of timm's layer ids from a parameter name (embeddings 0, layer i: i + 1, head L + 1)."""
    if name.startswith("backbone.encoder.layers."):
        return int(name.split(".")[3]) + 1
    if name.startswith("backbone.") and not name.startswith("backbone.norm."):
        return 0
    return LAYERS + 1


def no_decay_by_name(name: str) -> bool:
    return name.endswith(".bias") or "norm" in name.split(".")[-2] or name in ("backbone.pos_embed",
                                                                               "backbone.cls_token")


def optimizer_of(model, tmp_path, finetune: FinetuneConfig, steps: int = 0):
    """The optimizer and scheduler the Trainer builds for `model` (cosine over 10 steps), after `steps` steps."""
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.05, warmup_steps=2,
                             lr_scheduler_type="cosine", use_cpu=True, report_to="none")
    trainer = ClassifierTrainer(model=model, args=args, finetune=finetune)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    for _ in range(steps):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    return trainer.optimizer, trainer.lr_scheduler


@pytest.mark.parametrize("method", ["full", "lora"])
def test_layer_decay_learning_rates_and_weight_decay_as_read_from_the_optimizer(start, tmp_path, method):
    finetune = FinetuneConfig(method=method, layer_decay=0.5)
    model = prepare_model(load_classifier(start, id2label=LABELS), finetune)
    optimizer, scheduler = optimizer_of(model, tmp_path, finetune, steps=3)
    group_of = {id(p): i for i, group in enumerate(optimizer.param_groups) for p in group["params"]}
    schedule = scheduler.get_last_lr()[0]  # the head's group comes first: the base rate at this step
    assert optimizer.param_groups[0]["lr"] == schedule and 0 < schedule < 1e-3
    trainable = [(n.removeprefix("base_model.model."), p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(group_of) == len(trainable)
    for name, parameter in trainable:
        group = optimizer.param_groups[group_of[id(parameter)]]
        name = name.replace(".modules_to_save.default", "")
        assert group["lr"] == pytest.approx(schedule * 0.5 ** (LAYERS + 1 - depth_by_name(name)), rel=1e-12), name
        assert group["weight_decay"] == (0.0 if no_decay_by_name(name) else 0.05), name


def test_without_the_filter_every_parameter_gets_weight_decay(start, tmp_path):
    optimizer, _ = optimizer_of(load_classifier(start, id2label=LABELS), tmp_path,
                                FinetuneConfig(filter_bias_and_bn=False))
    assert [(group["name"], group["weight_decay"], group["lr"]) for group in optimizer.param_groups] == [
        ("weight_decay", 0.05, 1e-3 * 0.0)]  # one group; the learning rate at step 0 of the warm-up
