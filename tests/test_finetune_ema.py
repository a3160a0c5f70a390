"""The weight average (timm's ModelEmaV3): the decay schedule against a reference computation, exact resume,
evaluation of both weights and the choice of the final ones."""

import json

import pytest
import torch
from safetensors.torch import load_file

from test_finetune import data_dir, finetune_tree, start  # noqa: F401  (shared fixtures)
from train_helpers import weights
from vit_finetune.config import run_config_from_dict
from vit_finetune.modeling import load_classifier
from vit_finetune.training.checkpoints import list_checkpoints
from vit_finetune.training.ema import EMA_FILE, ema_scored_better
from vit_finetune.training.run import train

DECAY = 0.9
ACCUMULATE = dict(gradient_accumulation_steps=2, load_best_model_at_end=False)


def reference_decay(step: int, warmup: bool) -> float:
    """timm ModelEmaV3.get_decay(step) with update_after_step 0, warmup_gamma 1, warmup_power 2/3, min_decay 0."""
    step = max(0, step - 1)
    if step <= 0:
        return 0.0
    return min(DECAY, 1 - (1 + step) ** (-2 / 3)) if warmup else DECAY


def live_parameters(checkpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's weights by the trained model's parameter names."""
    return {name: p.detach() for name, p in load_classifier(checkpoint).named_parameters()}


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_after_k_steps_equals_the_reference_schedule(data_dir, start, tmp_path, warmup):  # noqa: F811
    out = tmp_path / "run"
    train(run_config_from_dict(finetune_tree(data_dir, out, start, {"ema_decay": DECAY, "ema_warmup": warmup},
                                             save_strategy="steps", save_steps=1, eval_strategy="no", **ACCUMULATE)))
    checkpoints = list_checkpoints(out)
    assert [int(c.name.split("-")[1]) for c in checkpoints] == list(range(1, len(checkpoints) + 1))
    assert len(checkpoints) >= 3  # 40 images / (8 x 2 accumulated) per epoch: the optimizer steps are counted
    reference = None
    for step, checkpoint in enumerate(checkpoints, start=1):
        live, decay = live_parameters(checkpoint), reference_decay(step, warmup)
        reference = live if reference is None else {k: decay * reference[k] + (1 - decay) * live[k] for k in live}
        saved = load_file(str(checkpoint / EMA_FILE))
        assert saved.keys() == reference.keys()
        for key in saved:
            assert torch.allclose(saved[key], reference[key], atol=1e-6, rtol=0), (step, key)
    assert not torch.allclose(saved["classifier.weight"], live["classifier.weight"], atol=1e-4)  # it does average


def test_ema_resume_mid_run_is_bitwise_equal(data_dir, start, tmp_path):  # noqa: F811
    finetune = {"ema_decay": 0.8}
    train(run_config_from_dict(finetune_tree(data_dir, tmp_path / "full", start, finetune, num_train_epochs=2,
                                             **ACCUMULATE)))
    first, last = list_checkpoints(tmp_path / "full")
    tree = finetune_tree(data_dir, tmp_path / "resumed", start, finetune, num_train_epochs=2, **ACCUMULATE)
    tree["training"]["resume_from_checkpoint"] = str(first)
    train(run_config_from_dict(tree))
    resumed_last = tmp_path / "resumed" / last.name
    for expected, actual in ((last / EMA_FILE, resumed_last / EMA_FILE),
                             (last / "model.safetensors", resumed_last / "model.safetensors"),
                             (tmp_path / "full" / "model.safetensors", tmp_path / "resumed" / "model.safetensors")):
        expected, actual = load_file(str(expected)), load_file(str(actual))
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), key
    assert not torch.equal(load_file(str(first / EMA_FILE))["classifier.weight"],
                           load_file(str(last / EMA_FILE))["classifier.weight"])


def test_a_checkpoint_without_its_ema_is_not_resumed(data_dir, start, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    train(run_config_from_dict(finetune_tree(data_dir, out, start, {"ema_decay": 0.8}, **ACCUMULATE)))
    (checkpoint,) = list_checkpoints(out)
    (checkpoint / EMA_FILE).unlink()
    tree = finetune_tree(data_dir, out, start, {"ema_decay": 0.8}, num_train_epochs=2, **ACCUMULATE)
    tree["training"]["resume_from_checkpoint"] = str(checkpoint)
    with pytest.raises(ValueError, match=f"incomplete \\(missing {EMA_FILE}\\)"):
        train(run_config_from_dict(tree))


@pytest.mark.parametrize("ema", [{"ema_decay": 0.99, "ema_warmup": False}, {"ema_decay": 0.6}])
def test_final_folder_holds_the_better_of_live_and_ema(data_dir, start, tmp_path, ema):  # noqa: F811
    out = tmp_path / "run"
    train(run_config_from_dict(finetune_tree(data_dir, out, start, ema, num_train_epochs=2,
                                             metric_for_best_model="loss", greater_is_better=False)))
    metrics = json.loads((out / "metrics.json").read_text())
    state = json.loads((list_checkpoints(out)[-1] / "trainer_state.json").read_text())
    evaluations = {entry["step"]: entry for entry in state["log_history"] if "eval_loss" in entry}
    assert all("eval_ema_loss" in entry and "eval_ema_accuracy" in entry for entry in evaluations.values())
    best = evaluations[state["best_global_step"]]
    assert state["best_metric"] == min(best["eval_loss"], best["eval_ema_loss"])  # scored by the better one
    expected = "ema" if best["eval_ema_loss"] < best["eval_loss"] else "live"
    assert metrics["final_weights"] == expected
    best_folder = out / f"checkpoint-{state['best_global_step']}"
    final = live_parameters(out)
    chosen = load_file(str(best_folder / EMA_FILE)) if expected == "ema" else live_parameters(best_folder)
    for key, value in chosen.items():
        assert torch.equal(final[key], value), key
    assert weights(out).keys() == weights(best_folder).keys()


@pytest.mark.parametrize("live, average, greater_is_better, expected", [
    (0.5, 0.6, True, True), (0.6, 0.5, True, False), (0.5, 0.5, True, False),
    (0.5, 0.6, False, False), (0.6, 0.5, False, True),
])
def test_ema_scored_better(live, average, greater_is_better, expected):
    metrics = {"eval_accuracy": live, "eval_ema_accuracy": average}
    assert ema_scored_better(metrics, "eval_accuracy", greater_is_better) is expected
