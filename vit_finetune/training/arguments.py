"""Which `TrainingArguments` settings a run supports: the others are refused before anything heavy starts.

The config accepts every `TrainingArguments` field under its HF name and passes it to the Trainer. The
settings in `REFUSED` cannot work with an image classifier trained by `ClassifierTrainer` (or would
leak a secret); `check_supported` turns each into a `ConfigError` (exit status 2) naming the key and
why. Optimizers and trackers whose packages are missing are refused the same way, naming the package.
tests/test_training_arguments.py trains a few steps with each setting users set most.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import HubStrategy

from vit_finetune.config import RunConfig
from vit_finetune.typed import ConfigError

SHARDED = ("sharded training is not supported: checkpoints are saved and reloaded strictly as one whole "
           "model; data-parallel training (torchrun, accelerate launch) is")

# (key, refused when, why)
REFUSED: list[tuple[str, Callable[[TrainingArguments, RunConfig], bool], str]] = [
    ("enable_jit_checkpoint", lambda a, r: a.enable_jit_checkpoint,
     "SIGTERM / SIGINT already save a complete checkpoint at the end of the current step (training/signals.py); "
     "the Trainer's handler would replace that one"),
    ("remove_unused_columns", lambda a, r: a.remove_unused_columns,
     "must stay false: the Trainer would drop the image column before the collate function reads it"),
    ("label_names", lambda a, r: a.label_names != ["labels"], "the collate function names the class ids 'labels'"),
    ("prediction_loss_only", lambda a, r: a.prediction_loss_only,
     "evaluation must compute the accuracy (it selects the best model and is the run's test result)"),
    ("eval_do_concat_batches", lambda a, r: not a.eval_do_concat_batches,
     "the accuracy metric takes the predictions of a whole split as one array"),
    ("batch_eval_metrics", lambda a, r: a.batch_eval_metrics, "the accuracy is computed once over the whole split"),
    ("dataloader_drop_last", lambda a, r: a.dataloader_drop_last,
     "the Trainer drops the last partial batch of the validation and test splits too, so the accuracy would "
     "leave images out"),
    ("train_sampling_strategy", lambda a, r: a.train_sampling_strategy in ("group_by_length", "batch_rebalance"),
     "it groups text sequences by length; the images of a run all have one size"),
    ("neftune_noise_alpha", lambda a, r: a.neftune_noise_alpha is not None,
     "it adds noise to text token embeddings; an image classifier has none"),
    ("use_liger_kernel", lambda a, r: a.use_liger_kernel, "Liger kernels patch language models"),
    ("deepspeed", lambda a, r: a.deepspeed is not None, SHARDED),
    ("fsdp", lambda a, r: bool(a.fsdp), SHARDED),
    ("hub_strategy", lambda a, r: a.push_to_hub and a.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS),
     "the Trainer would upload each checkpoint while it is still being written (in output_dir/_incomplete/, "
     "before it is complete), and resume reads local checkpoints only; use every_save (the default) or end"),
    ("hub_token", lambda a, r: a.hub_token is not None,
     "a token in the config would be written into the uploaded training_args.bin; log in with `hf auth login` "
     "or set HF_TOKEN instead"),
    ("label_smoothing_factor", lambda a, r: a.label_smoothing_factor > 0 and r.data.augment.label_smoothing > 0,
     "data.augment.label_smoothing is set too, and both smooth the same targets (it would be applied twice); "
     "set one of them: either is applied to the mixup / cutmix soft targets (training/losses.py)"),
    ("save_only_model", lambda a, r: a.save_only_model and r.training.resume_from_checkpoint is not False,
     "checkpoints saved with save_only_model hold no optimizer, scheduler or RNG state, so a run cannot resume "
     "from them"),
]


def check_supported(args: TrainingArguments, run: RunConfig) -> None:
    """Raise `ConfigError` for a refused setting, an unavailable optimizer or an unknown / missing tracker."""
    for key, refused, why in REFUSED:
        if refused(args, run):
            raise ConfigError(f"{run.source}: training.{key}={_shown(key, getattr(args, key))} is not supported: {why}")
    _check_optimizer(args, run.source)
    _check_report_to(args, run.source)


def _check_optimizer(args: TrainingArguments, source: str) -> None:
    """The optimizer the Trainer will build: its package installed, `optim_args` readable."""
    try:
        Trainer.get_optimizer_cls_and_kwargs(args)
    except (ImportError, ValueError) as err:
        raise ConfigError(f"{source}: training.optim={args.optim.value} (optim_args {args.optim_args!r}): "
                          f"{str(err).splitlines()[0]}") from None


def _check_report_to(args: TrainingArguments, source: str) -> None:
    """Each tracker named in `report_to` is one the Trainer knows, and is installed."""
    from transformers.integrations.integration_utils import (INTEGRATION_TO_CALLBACK,
                                                             get_available_reporting_integrations)

    for name in args.report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            raise ConfigError(f"{source}: training.report_to: unknown tracker {name!r}; known: "
                              f"{sorted(INTEGRATION_TO_CALLBACK)} (or none)")
        if name not in get_available_reporting_integrations():
            raise ConfigError(f"{source}: training.report_to: {name} is not installed "
                              "(pip install -e .[tracking] installs tensorboard, mlflow and wandb)")


def _shown(key: str, value: Any) -> str:
    """A setting's value for a message; secrets are not repeated."""
    if key.endswith("_token"):
        return "<set>"
    return repr(value) if isinstance(value, (list, dict)) else str(getattr(value, "value", value))
