"""The transformers internals `vit_finetune/training/trainer.py` relies on, as recorded in the pinned release.

setup.cfg pins `transformers>=5.24,<5.25`. Before widening the pin, run this file against the new release:
a failure says which method or behaviour changed and what to re-check. The reliability tests
(tests/reliability/, tests/test_train.py) then show whether the guarantees still hold.
"""

import inspect

import pytest
import transformers
from accelerate.data_loader import prepare_data_loader
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import CallbackHandler, TrainerState
from transformers.trainer_optimizer import is_optimizer_factory
from transformers.trainer_pt_utils import safe_globals
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from vit_finetune.training.checkpoints import TRAINER_STATE
from vit_finetune.training.trainer import ClassifierTrainer

RECORDED_IN = "5.24.0"
TRAINER_PY = "vit_finetune/training/trainer.py (and finetune_trainer.py, its mixin)"

# Trainer methods ClassifierTrainer overrides: signature (annotations left out) and what the override is for.
OVERRIDDEN = {
    "training_step": ("(self, model, inputs, num_items_in_batch=None)", "the non-finite-loss guard"),
    "compute_loss": ("(self, model, inputs, return_outputs=False, num_items_in_batch=None)",
                     "the training-step augmentations, the soft-target loss and the class weights"),
    "_get_train_sampler": ("(self, train_dataset=None)", "the class-balanced sampler of data.sampler: balanced"),
    "_save": ("(self, output_dir=None, state_dict=None)", "saving our model as a complete HF-native folder"),
    "_get_output_dir": ("(self, trial)", "writing checkpoints into the staging folder output_dir/_incomplete"),
    "_load_from_checkpoint": ("(self, resume_from_checkpoint, model=None)", "the strict reload on resume"),
    "_load_best_model": ("(self)", "the strict reload of the best model at the end"),
    "_get_dataloader": ("(self, dataset, description, batch_size, sampler_fn=None, is_training=False, "
                        "dataloader_key=None)", "data-loader workers that ignore SIGINT / SIGTERM"),
    "_load_optimizer_and_scheduler": ("(self, checkpoint)", "checking the loaded optimizer state against the "
                                      "parameters before the first step"),
    "create_optimizer": ("(self, model=None)", "finetune's parameter groups (weight-decay filter, layer-wise rates)"),
    "evaluation_loop": ("(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, "
                        "metric_key_prefix='eval')", "evaluating the EMA weights into the same metrics"),
    "_determine_best_metric": ("(self, metrics, trial)", "scoring a checkpoint by the better of live and EMA weights"),
    "_save_checkpoint": ("(self, model, trial)", "writing ema.safetensors into each checkpoint"),
    "create_model_card": ("(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None, "
                          "tasks=None, dataset_tags=None, dataset=None, dataset_args=None)",
                          "keeping the run's own model card (README.md) when push_to_hub uploads the folder"),
    "get_train_dataloader": ("(self)", "a streaming split's own loader in each process (training/streaming.py)"),
}

# Other functions the checkpoint code calls, with their recorded signatures.
CALLED = {
    "transformers.trainer_utils.rotate_checkpoints": (
        rotate_checkpoints,
        "(output_dir, save_total_limit=None, best_model_checkpoint=None, use_mtime=False, checkpoint_prefix='checkpoint')"),
    "transformers.trainer_pt_utils.safe_globals": (safe_globals, "()"),
    "TrainerState.save_to_json": (TrainerState.save_to_json, "(self, json_path)"),
    "accelerate.data_loader.prepare_data_loader": (
        prepare_data_loader,
        "(dataloader, device=None, num_processes=None, process_index=None, split_batches=False, put_on_device=False, "
        "rng_types=None, dispatch_batches=None, even_batches=True, slice_fn_for_dispatch=None, "
        "use_seedable_sampler=False, data_seed=None, non_blocking=False, use_stateful_dataloader=False, "
        "torch_device_mesh=None)"),
    "Trainer.get_optimizer_cls_and_kwargs": (Trainer.get_optimizer_cls_and_kwargs, "(args, model=None)"),
    "transformers.trainer_optimizer.is_optimizer_factory": (is_optimizer_factory, "(optimizer_cls_or_factory)"),
}


def own_attributes(cls: type) -> dict:
    """What `cls` and its mixins define, not what they inherit from `transformers.Trainer`."""
    ours = cls.__mro__[:cls.__mro__.index(Trainer)]
    return {name: value for base in reversed(ours) for name, value in vars(base).items()}


def plain_signature(function) -> str:
    """The signature without annotations (they change with typing fashions, not with behaviour)."""
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


def changed(what: str, now: str, recorded: str, recheck: str) -> str:
    return (f"transformers {transformers.__version__}: {what} is now {now}, recorded {recorded} in "
            f"transformers {RECORDED_IN}. Re-check {recheck} in {TRAINER_PY} against the new Trainer source, run "
            "tests/reliability and tests/test_train.py, then update this table and the pin in setup.cfg.")


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_overridden_trainer_methods_are_unchanged(name):
    recorded, purpose = OVERRIDDEN[name]
    assert name in own_attributes(ClassifierTrainer), f"{TRAINER_PY} no longer overrides {name}: remove it from this table"
    original = getattr(Trainer, name, None)
    assert original is not None, changed(f"Trainer.{name}", "gone", recorded, purpose)
    assert plain_signature(original) == recorded, changed(f"Trainer.{name}", plain_signature(original), recorded,
                                                          purpose)


def test_no_unrecorded_override():
    overrides = {name for name, value in own_attributes(ClassifierTrainer).items()
                 if callable(value) and hasattr(Trainer, name) and not name.startswith("__")}
    assert overrides == set(OVERRIDDEN), f"record every overridden Trainer method in OVERRIDDEN: {overrides}"


@pytest.mark.parametrize("name", CALLED)
def test_called_functions_are_unchanged(name):
    function, recorded = CALLED[name]
    assert plain_signature(function) == recorded, changed(name, plain_signature(function), recorded,
                                                          f"the call of {name}")


def test_checkpoints_are_written_under_get_output_dir_and_published_on_save():
    """The staging works only if `_save_checkpoint` writes under `_get_output_dir` and `on_save` follows it."""
    save = inspect.getsource(Trainer._save_checkpoint)
    assert "self._get_output_dir(" in save, changed(
        "Trainer._save_checkpoint", "not calling _get_output_dir", "run_dir = self._get_output_dir(trial=trial)",
        "where checkpoints are written (_get_output_dir) and CheckpointPublisher")
    flow = inspect.getsource(Trainer._maybe_log_save_evaluate)
    order = flow.find("self._save_checkpoint("), flow.find("on_save(")
    assert 0 <= order[0] < order[1], changed(
        "Trainer._maybe_log_save_evaluate", "not calling on_save after _save_checkpoint",
        "_save_checkpoint(...) then callback_handler.on_save(...)", "when CheckpointPublisher.on_save runs")
    assert (PREFIX_CHECKPOINT_DIR, transformers.trainer.TRAINER_STATE_NAME) == ("checkpoint", TRAINER_STATE), changed(
        "the checkpoint folder prefix and state file name", f"{PREFIX_CHECKPOINT_DIR!r}, "
        f"{transformers.trainer.TRAINER_STATE_NAME!r}", f"'checkpoint', {TRAINER_STATE!r}", "the checkpoint names")


@pytest.mark.parametrize("name", ["push_to_hub", "_push_from_checkpoint"])
def test_hub_uploads_of_output_dir_leave_out_private_files_and_checkpoints(name):
    """`_lock` and `_incomplete/` stay local because every upload of output_dir ignores `_*` (and checkpoints)."""
    source = inspect.getsource(getattr(Trainer, name))
    assert 'ignore_patterns=["_*", f"{PREFIX_CHECKPOINT_DIR}-*"]' in source, changed(
        f"Trainer.{name}", "uploading with other ignore_patterns", '["_*", "checkpoint-*"]',
        "the names of private files (training/checkpoints.py: STAGING_DIR, LOCK_FILE)")


@pytest.mark.parametrize("name", ["_load_optimizer_and_scheduler", "_load_rng_state", "_load_scaler"])
def test_resume_state_is_loaded_weights_only(name):
    """`check_resume_pickles` mirrors the Trainer: every `torch.load` of resume state passes `weights_only=True`."""
    source = inspect.getsource(getattr(Trainer, name))
    loads, safe = source.count("torch.load("), source.count("weights_only=True")
    assert loads and loads == safe, changed(f"Trainer.{name}", f"{loads} torch.load calls, {safe} weights_only=True",
                                            "weights_only=True on each", "check_resume_pickles and RESUME_PICKLES")


def test_attributes_the_checkpoint_code_reads():
    handler = CallbackHandler([], None, None, None, None)
    assert isinstance(handler.callbacks, list), changed("CallbackHandler.callbacks", type(handler.callbacks).__name__,
                                                        "list", "ClassifierTrainer.__init__ (inserts its publisher)")
    state = TrainerState()
    assert state.best_model_checkpoint is None and isinstance(TrainingArguments.should_save, property), changed(
        "TrainerState.best_model_checkpoint / TrainingArguments.should_save", "different", "present",
        "CheckpointPublisher")
