"""Fine-tuning methods (which parameters train) and the optimizer's parameter groups, as timm defines them.

Every parameter of an `ImageClassifier` has a depth, read from the module structure (so any encoder laid
out as `backbone.encoder.layers.{i}` works, whatever its embeddings and heads):

    0        embeddings: the backbone's own parameters (class / distillation / register tokens, position
             table) and its sub-modules registered before `encoder` (patch embedding, pre-norm)
    i + 1    encoder layer i, including adapters injected into it (LoRA)
    L + 1    head: the backbone's sub-modules registered after `encoder` (final norm), then everything
             outside the backbone (pooling, classifier)

`layer_decay` scales the learning rate of depth d by `layer_decay ** (L + 1 - d)` (BEiT / MAE / timm's
`param_groups_layer_decay`): the head trains at the base rate, layer i at `base * layer_decay ** (L - i)`,
the embeddings at the lowest rate. `filter_bias_and_bn` keeps weight decay off one-dimensional parameters
(biases, norm weights) and the backbone's own parameters (tokens, position table), as timm's
`create_optimizer_v2(filter_bias_and_bn=True)` with the model's `no_weight_decay()` set does.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable

import torch
from torch import nn

from vit_finetune.finetune_config import FinetuneConfig
from vit_finetune.modeling.model import ImageClassifier
from vit_finetune.training.ema import EMA_FILE
from vit_finetune.training.lora import ADAPTER_FILES, add_lora
from vit_finetune.typed import ConfigError

logger = logging.getLogger(__name__)


def check_available(config: FinetuneConfig) -> None:
    """Refuse a method whose library is missing before anything heavy starts (LoRA needs peft)."""
    if config.method == "lora" and importlib.util.find_spec("peft") is None:
        raise ConfigError("finetune.method: lora needs the peft library: pip install 'vit_finetune[lora]'")


def checkpoint_files(config: FinetuneConfig) -> tuple[str, ...]:
    """Files a resumable checkpoint of this run holds besides the Trainer's (LoRA adapter, EMA weights)."""
    files = (EMA_FILE,) if config.ema_decay is not None else ()
    return files + (ADAPTER_FILES if config.method == "lora" else ())


def classifier_of(model: nn.Module) -> ImageClassifier:
    """The `ImageClassifier` being trained: `model` itself, or the one inside a peft wrapper."""
    return model if isinstance(model, ImageClassifier) else model.get_base_model()


def num_layers(classifier: ImageClassifier) -> int:
    return len(classifier.backbone.encoder.layers)


def parameter_depths(classifier: ImageClassifier) -> dict[int, int]:
    """`id(parameter)` -> depth (0 embeddings, i + 1 encoder layer i, L + 1 head; module docstring)."""
    backbone, L = classifier.backbone, num_layers(classifier)
    depths = {id(p): L + 1 for p in classifier.parameters()}
    depths.update((id(p), 0) for p in backbone.parameters(recurse=False))
    for child in _children_before(backbone, backbone.encoder):
        depths.update((id(p), 0) for p in child.parameters())
    for i, layer in enumerate(backbone.encoder.layers):
        depths.update((id(p), i + 1) for p in layer.parameters())
    return depths


def _children_before(module: nn.Module, marker: nn.Module) -> list[nn.Module]:
    """`module`'s sub-modules registered before `marker` (the embedding side of an encoder)."""
    before = []
    for child in module.children():
        if child is marker:
            return before
        before.append(child)
    raise ValueError("the encoder is not a sub-module of the backbone")


def prepare_model(model: ImageClassifier, config: FinetuneConfig) -> nn.Module:
    """The model to train for `config.method`: frozen parts set, or wrapped with LoRA adapters (peft)."""
    if config.method == "linear_probe":
        freeze(model.backbone.parameters())
        keep_in_eval_mode(model.backbone)
    elif config.method == "freeze":
        freeze_all_but_last_layers(model, config.trainable_blocks)
    elif config.method == "lora":
        return add_lora(model, config.lora)
    return model


def freeze(parameters: Iterable[nn.Parameter]) -> None:
    """No gradient for these parameters: no autograd graph through them, no optimizer state for them."""
    for parameter in parameters:
        parameter.requires_grad_(False)


def keep_in_eval_mode(module: nn.Module) -> None:
    """`module` computes in eval mode (no dropout, patch dropout or drop path) even when the Trainer calls
    `model.train()` before each step: switched back to eval right before each forward."""
    module.eval()
    module.register_forward_pre_hook(_switch_to_eval)


def _switch_to_eval(module: nn.Module, args: tuple) -> None:
    if module.training:
        module.eval()


def freeze_all_but_last_layers(model: ImageClassifier, trainable_blocks: int) -> None:
    """Freeze the embeddings and all but the last `trainable_blocks` encoder layers (final norm and head train)."""
    L = num_layers(model)
    if trainable_blocks > L:
        raise ConfigError(f"finetune.trainable_blocks: {trainable_blocks} is more than the model's {L} encoder layers")
    depths = parameter_depths(model)
    freeze(p for p in model.parameters() if depths[id(p)] <= L - trainable_blocks)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, as peft's `get_nb_trainable_parameters` counts them."""
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


def describe_trainable(model: nn.Module, config: FinetuneConfig) -> str:
    """One log line: the method and the trainable share of the parameters."""
    trainable, total = count_parameters(model)
    method = config.method
    if method == "freeze":
        method = f"freeze (the last {config.trainable_blocks} layers train)"
    elif method == "lora":
        method = f"lora (rank {config.lora.rank} on {', '.join(config.lora.target_modules)})"
    share = 100 * trainable / total
    return f"finetune.method {method}: {trainable:,} trainable parameters of {total:,} ({share:.2f} %)"


def param_groups(model: nn.Module, config: FinetuneConfig, weight_decay: float,
                 learning_rate: float | None) -> list[dict]:
    """The optimizer's parameter groups for the trainable parameters of `model` (module docstring), the
    head's first (the Trainer logs the first group's learning rate); empty groups left out."""
    classifier = classifier_of(model)
    top = num_layers(classifier) + 1
    depths = parameter_depths(classifier) if config.layer_decay is not None else {}
    no_decay = no_weight_decay_ids(classifier) if config.filter_bias_and_bn else set()
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth, decay = depths.get(id(parameter), top), id(parameter) not in no_decay
        group = groups.setdefault((depth, decay), _new_group(depth, top, decay, config, weight_decay, learning_rate))
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups, key=lambda key: (-key[0], not key[1]))]


def _new_group(depth: int, top: int, decay: bool, config: FinetuneConfig, weight_decay: float,
               learning_rate: float | None) -> dict:
    """An empty group; its name says the depth (with layer_decay) and whether weight decay applies."""
    name = "weight_decay" if decay else "no_weight_decay"
    if config.layer_decay is not None:
        name = f"{'head' if depth == top else 'embeddings' if depth == 0 else f'layer_{depth - 1}'}_{name}"
    group = {"params": [], "weight_decay": weight_decay if decay else 0.0, "name": name}
    if config.layer_decay is not None:
        if learning_rate is None:
            raise ConfigError("finetune.layer_decay: the optimizer (training.optim) sets no learning rate to scale")
        group["lr"] = learning_rate * config.layer_decay ** (top - depth)
    return group


def no_weight_decay_ids(classifier: ImageClassifier) -> set[int]:
    """`id`s of the parameters timm trains without weight decay: 1-d ones (biases, norms) and the backbone's
    own parameters (class / distillation / register tokens, the position table)."""
    own = {id(p) for p in classifier.backbone.parameters(recurse=False)}
    return own | {id(p) for name, p in classifier.named_parameters() if p.ndim <= 1 or name.endswith(".bias")}


def describe_groups(groups: list[dict]) -> str:
    """One log line per group: name, tensors, elements, learning rate and weight decay."""
    lines = [f"  {g['name']}: {len(g['params'])} tensors, {sum(p.numel() for p in g['params']):,} parameters, "
             f"lr {format(g['lr'], '.3g') if 'lr' in g else 'base'}, weight decay {g['weight_decay']}" for g in groups]
    return "optimizer parameter groups:\n" + "\n".join(lines)


def optimizer_state_size(optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    """(elements, bytes) of the tensors the optimizer keeps per parameter (moments, step counters)."""
    tensors = [t for state in optimizer.state_dict()["state"].values() for t in state.values() if torch.is_tensor(t)]
    return sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors)


def finetune_metrics(model: nn.Module, optimizer: torch.optim.Optimizer, final_weights: str) -> dict:
    """What trained and what it cost (logged too): trainable parameters, optimizer state, live or EMA weights."""
    trainable, total = count_parameters(model)
    elements, size = optimizer_state_size(optimizer)
    logger.info("optimizer state: %s elements (%.1f MB) for %s trainable parameters; final weights: %s",
                f"{elements:,}", size / 1e6, f"{trainable:,}", final_weights)
    return {"trainable_parameters": trainable, "total_parameters": total, "optimizer_state_elements": elements,
            "optimizer_state_bytes": size, "final_weights": final_weights}
