"""Every `TrainingArguments` setting users set most either trains correctly or is refused up front.

Trained cases (in-process `train()`, one tiny shared data set, 2 epochs of 3 steps): each asserts that the
setting was applied (the optimizer built, the learning-rate curve, the number of optimizer steps, clipped
updates, ...) and that the loss stayed finite. Refused cases go through the train command: exit status 2,
a message naming the key and why, before any data is read.
"""

import math
from pathlib import Path

import pytest
import torch
import transformers
import yaml

from data_helpers import make_image_folder
from train_helpers import tiny_run_tree
from vit_finetune.commands import EXIT_USER_ERROR
from vit_finetune.commands.train import main
from vit_finetune.config import run_config_from_dict
from vit_finetune.training import run as run_module
from vit_finetune.training.run import train

LR = 3e-3
STEPS = 6  # 24 training images, batch 8, 2 epochs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """3 classes x 10 training images: 24 to train on (3 steps of 8), 6 for validation; 15 test images."""
    return make_image_folder(tmp_path_factory.mktemp("arguments-data"), classes=("red", "green", "blue"), per_class=10)


def tree_for(data_dir: Path, output_dir: Path, **training) -> dict:
    """A quick run: no evaluation or checkpoints during training unless a case asks, sdpa (no start-up probe)."""
    tree = tiny_run_tree(data_dir, output_dir, **{"eval_strategy": "no", "save_strategy": "no",
                                                  "load_best_model_at_end": False, "logging_steps": 1, **training})
    tree["model"]["attn_implementation"] = "sdpa"
    return tree


class Trained:
    """A finished run: the Trainer (optimizer, scheduler, state), the initial weights and what was logged."""

    def __init__(self, trainer, initial: dict, metrics: dict):
        self.trainer, self.initial, self.metrics = trainer, initial, metrics
        self.log = trainer.state.log_history
        self.losses = [entry["loss"] for entry in self.log if "loss" in entry]
        self.rates = [entry["learning_rate"] for entry in self.log if "learning_rate" in entry]

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return getattr(self.trainer.optimizer, "optimizer", self.trainer.optimizer)  # accelerate's wrapper

    def max_weight_change(self) -> float:
        final = self.trainer.model.state_dict()
        return max((final[k] - self.initial[k]).abs().max().item() for k in self.initial)


def train_with(monkeypatch, data_dir: Path, output_dir: Path, callback=None, **training) -> Trained:
    """Train a tree with these `training` keys; keep the Trainer and the weights it started from."""
    made = {}
    make_trainer = run_module.make_trainer

    def keep(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        made["trainer"], made["initial"] = trainer, {k: v.clone() for k, v in trainer.model.state_dict().items()}
        if callback is not None:
            trainer.add_callback(callback)
        return trainer

    monkeypatch.setattr(run_module, "make_trainer", keep)
    result = train(run_config_from_dict(tree_for(data_dir, output_dir, **training)))
    monkeypatch.undo()
    trained = Trained(made["trainer"], made["initial"], result.metrics)
    assert all(math.isfinite(loss) for loss in trained.losses)
    return trained


@pytest.fixture(scope="module")
def baseline(data_dir, tmp_path_factory) -> Trained:
    """The run every case is compared with: AdamW (fused), linear decay, no accumulation, seed 0."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return train_with(monkeypatch, data_dir, tmp_path_factory.mktemp("baseline") / "run")


def linear(step: int, warmup: int = 0) -> float:
    return LR * step / warmup if step < warmup else LR * max(0.0, (STEPS - step) / (STEPS - warmup))


def cosine(step: int, cycles: float = 0.5) -> float:
    return LR * 0.5 * (1 + math.cos(math.pi * 2 * cycles * step / STEPS))


def cosine_with_restarts(step: int, cycles: int = 2) -> float:
    return LR * 0.5 * (1 + math.cos(math.pi * ((cycles * step / STEPS) % 1.0)))


def polynomial(step: int, end: float = 1e-7, power: float = 1.0) -> float:
    return (LR - end) * (1 - step / STEPS) ** power + end


# lr_scheduler_type (+ kwargs), the learning rate of step s (logged at step s + 1) in closed form
SCHEDULES = {
    "cosine": ({}, cosine),
    "cosine_with_restarts": ({"lr_scheduler_kwargs": {"num_cycles": 2}}, cosine_with_restarts),
    "polynomial": ({}, polynomial),
    "constant_with_warmup": ({"warmup_steps": 2}, lambda step: LR * min(1.0, step / 2)),
    "warmup_ratio": ({"warmup_ratio": 0.5, "lr_scheduler_type": "linear"}, lambda step: linear(step, warmup=3)),
}


def test_the_defaults_are_fused_adamw_linear_decay_and_logging_every_step(baseline):
    """What the other cases change: the baseline run has the Trainer's defaults (logging_steps: 1 here)."""
    assert type(baseline.optimizer) is torch.optim.AdamW
    assert all(group["fused"] for group in baseline.optimizer.param_groups)
    assert baseline.rates == pytest.approx([linear(step) for step in range(STEPS)], rel=1e-6)
    assert [entry["step"] for entry in baseline.log if "loss" in entry] == list(range(1, STEPS + 1))
    assert baseline.losses[-1] < baseline.losses[0]


@pytest.mark.parametrize("name", SCHEDULES)
def test_learning_rate_schedules(monkeypatch, data_dir, tmp_path, name):
    extra, rate = SCHEDULES[name]
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", **{"lr_scheduler_type": name, **extra})
    assert trained.rates == pytest.approx([rate(step) for step in range(STEPS)], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("optim, optim_args, expected, settings", [
    ("sgd", "momentum=0.9", torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
    ("sgd", "momentum=0.9,nesterov=true", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    ("adamw_torch", None, torch.optim.AdamW, {"fused": None}),
    ("adafactor", None, transformers.optimization.Adafactor, {"relative_step": False, "scale_parameter": False}),
])
def test_optimizers(monkeypatch, data_dir, tmp_path, optim, optim_args, expected, settings):
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", optim=optim, optim_args=optim_args)
    assert type(trained.optimizer) is expected
    for group in trained.optimizer.param_groups:
        assert {key: group[key] for key in settings} == settings
    assert trained.max_weight_change() > 0


def test_gradient_accumulation_makes_fewer_optimizer_steps(monkeypatch, data_dir, tmp_path, baseline):
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", gradient_accumulation_steps=3)
    assert baseline.trainer.state.global_step == STEPS and trained.trainer.state.global_step == STEPS // 3
    assert trained.trainer.state.epoch == pytest.approx(2.0)  # the same images, one update per 3 batches


def test_max_grad_norm_clips_every_update(monkeypatch, data_dir, tmp_path):
    """SGD without momentum moves each weight by at most lr x max_grad_norm per step once gradients are clipped."""
    clipped = train_with(monkeypatch, data_dir, tmp_path / "clipped", optim="sgd", learning_rate=0.1,
                         lr_scheduler_type="constant", max_grad_norm=1e-4)
    free = train_with(monkeypatch, data_dir, tmp_path / "free", optim="sgd", learning_rate=0.1,
                      lr_scheduler_type="constant", max_grad_norm=0)
    assert 0 < clipped.max_weight_change() <= STEPS * 0.1 * 1e-4 * (1 + 1e-3)
    assert free.max_weight_change() > 10 * STEPS * 0.1 * 1e-4


def test_label_smoothing_changes_the_training_loss(monkeypatch, data_dir, tmp_path, baseline):
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", label_smoothing_factor=0.2)
    assert trained.trainer.label_smoother is not None and trained.trainer.label_smoother.epsilon == 0.2
    # the same weights and batch at step 1: the smoothed loss differs from the plain one
    assert trained.losses[0] != pytest.approx(baseline.losses[0], rel=1e-4)


@pytest.mark.parametrize("strategy, logged_at", [("epoch", [3, 6]), ("no", [])])
def test_logging_strategy(monkeypatch, data_dir, tmp_path, strategy, logged_at):
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", logging_strategy=strategy)
    assert [entry["step"] for entry in trained.log if "loss" in entry] == logged_at


@pytest.mark.parametrize("training", [
    {"eval_accumulation_steps": 1},
    {"include_for_metrics": ["inputs", "loss"]},
    {"per_device_eval_batch_size": 2},
], ids=lambda training: next(iter(training)))
def test_evaluation_settings_give_the_same_test_metrics(monkeypatch, data_dir, tmp_path, baseline, training):
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", **training)
    for key in ("test_accuracy", "test_loss"):
        assert trained.metrics[key] == pytest.approx(baseline.metrics[key], rel=1e-5), key


def test_dataloader_workers(monkeypatch, data_dir, tmp_path):
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", dataloader_num_workers=2,
                         dataloader_persistent_workers=True)
    assert trained.trainer.get_train_dataloader().num_workers == 2
    assert len(trained.losses) == STEPS and trained.losses[-1] < trained.losses[0]


@pytest.mark.parametrize("key, value", [("seed", 1), ("data_seed", 1)])
def test_seeds(monkeypatch, data_dir, tmp_path, baseline, key, value):
    """`seed` draws other initial weights; `data_seed` keeps them and draws another batch order."""
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", **{key: value})
    same_init = all(torch.equal(trained.initial[k], baseline.initial[k]) for k in baseline.initial)
    assert same_init == (key == "data_seed")
    assert trained.losses != baseline.losses


def test_save_only_model_checkpoints_hold_the_model_only(monkeypatch, data_dir, tmp_path, baseline):
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", save_only_model=True, eval_strategy="epoch",
                         save_strategy="epoch", load_best_model_at_end=True)
    checkpoints = sorted((tmp_path / "run").glob("checkpoint-*"))
    assert [p.name for p in checkpoints] == ["checkpoint-3", "checkpoint-6"]
    for folder in checkpoints:
        assert (folder / "model.safetensors").is_file() and not (folder / "optimizer.pt").exists()
    assert trained.trainer.state.best_model_checkpoint in map(str, checkpoints)


def test_use_cpu_false_still_trains_on_the_cpu_of_a_machine_without_gpu(monkeypatch, data_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", use_cpu=False)
    assert trained.trainer.args.device.type == "cpu"


class OutOfMemoryOnce(transformers.TrainerCallback):
    """Fails the first step of the first attempt the way the CPU allocator reports an out-of-memory."""

    def __init__(self):
        self.raised = False

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.raised:
            self.raised = True
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes.")


def test_auto_find_batch_size_lowers_the_batch_after_out_of_memory(monkeypatch, data_dir, tmp_path):
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", callback=OutOfMemoryOnce(), auto_find_batch_size=True)
    batch = trained.trainer.state.train_batch_size
    assert batch < 8  # accelerate's find_executable_batch_size retried with a smaller batch
    assert trained.trainer.state.global_step == 2 * math.ceil(24 / batch)  # 24 images, 2 epochs


@pytest.mark.slow
def test_torch_compile(monkeypatch, data_dir, tmp_path, baseline):
    """Works on the CPU too (torch 2.13, inductor); compiling takes minutes on 2 cores, hence slow."""
    trained = train_with(monkeypatch, data_dir, tmp_path / "run", torch_compile=True)
    assert isinstance(trained.trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert trained.losses == pytest.approx(baseline.losses, rel=1e-4)


# key=value overrides, and the words the message must contain besides the key
REFUSED = {
    "enable_jit_checkpoint": (["training.enable_jit_checkpoint=true"], "SIGTERM"),
    "remove_unused_columns": (["training.remove_unused_columns=true"], "image column"),
    "label_names": (["training.label_names=[label]"], "'labels'"),
    "prediction_loss_only": (["training.prediction_loss_only=true"], "accuracy"),
    "eval_do_concat_batches": (["training.eval_do_concat_batches=false"], "one array"),
    "batch_eval_metrics": (["training.batch_eval_metrics=true"], "whole split"),
    "dataloader_drop_last": (["training.dataloader_drop_last=true"], "leave images out"),
    "train_sampling_strategy": (["training.train_sampling_strategy=group_by_length"], "text"),
    "neftune_noise_alpha": (["training.neftune_noise_alpha=5"], "text token embeddings"),
    "use_liger_kernel": (["training.use_liger_kernel=true"], "language models"),
    "deepspeed": (["training.deepspeed=ds_config.json"], "deepspeed"),
    "fsdp": (["training.fsdp=full_shard"], "fsdp"),
    "hub_strategy": (["training.push_to_hub=true", "training.hub_strategy=checkpoint"], "_incomplete"),
    "hub_token": (["training.hub_token=hf_secret_in_config"], "HF_TOKEN"),
    "label_smoothing_factor": (["training.label_smoothing_factor=0.1", "data.augment.label_smoothing=0.1"],
                               "applied twice"),
    "save_only_model": (["training.save_only_model=true", "training.resume_from_checkpoint=true"], "cannot resume"),
    "optim": (["training.optim=adamw_bnb_8bit"], "bitsandbytes"),
    "optim_args": (["training.optim=sgd", "training.optim_args=momentum"], "optim_args"),
    "report_to": (["training.report_to=nonexistent_tracker"], "unknown tracker"),
    "save_safetensors": (["training.save_safetensors=false"], "unknown key"),
    "data.num_workers": (["data.num_workers=2"], "unknown key"),
}


@pytest.mark.parametrize("key", REFUSED)
def test_refused_settings_exit_2_naming_the_key(data_dir, tmp_path, capsys, key):
    overrides, reason = REFUSED[key]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tree_for(data_dir, tmp_path / "run")))
    assert main(["--config", str(config), *overrides]) == EXIT_USER_ERROR
    message = capsys.readouterr().err.strip().splitlines()[-1]
    name = key.rpartition(".")[2]
    assert message.startswith("error: ") and name in message and reason in message, message
    assert "hf_secret_in_config" not in message  # a token is never repeated
    assert not (tmp_path / "run" / "run_config.yaml").exists()


def test_refusals_name_existing_fields():
    """Each refused key is a TrainingArguments field of the pinned release (a rename would silently un-refuse it)."""
    from dataclasses import fields

    from vit_finetune.training.arguments import REFUSED as TABLE

    names = {field.name for field in fields(transformers.TrainingArguments)}
    assert {key for key, _, _ in TABLE} <= names
