"""The `finetune:` section of a run config: which parameters train, at which rates, and the weight average.

    finetune:
      method: lora              # full | linear_probe | freeze | lora
      trainable_blocks: null    # freeze: the last N encoder layers (with the final norm and the head) train
      lora: {rank: 8, alpha: 16, dropout: 0.0, target_modules: [qkv, proj]}
      layer_decay: 0.75         # layer i of L: learning_rate * layer_decay ** (L - i); embeddings the lowest
      filter_bias_and_bn: true  # no weight decay on biases, norms, position table and class/register tokens
      ema_decay: 0.9998         # exponential moving average of the weights (timm's ModelEmaV3)
      ema_warmup: true

Key names are timm's (`layer_decay`, `filter_bias_and_bn`, `ema_decay`) and peft's (LoRA `rank` is its `r`,
`alpha` its `lora_alpha`, `dropout` its `lora_dropout`). Pure data: nothing here imports torch or peft, so
evaluation reads a LoRA run's recorded config without either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vit_finetune.typed import ConfigError

Method = Literal["full", "linear_probe", "freeze", "lora"]

# LoRA targets: module names inside an encoder layer (timm's). Attention is one fused q/k/v Linear (`qkv`,
# D -> 3D) and its output projection (`proj`); the MLP is `fc1`, `fc2`.
LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")


@dataclass
class LoraSettings:
    """LoRA adapters (peft) on the encoder layers' Linear modules; the head trains in full."""

    rank: int = 8
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("qkv", "proj")

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if self.rank < 1:
            raise ConfigError(f"finetune.lora.rank: must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"finetune.lora.alpha: must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"finetune.lora.dropout: must be in [0, 1), got {self.dropout}")
        unknown = [name for name in self.target_modules if name not in LORA_TARGETS]
        if unknown or not self.target_modules:
            raise ConfigError(f"finetune.lora.target_modules: expected a non-empty list of {list(LORA_TARGETS)}, "
                              f"got {list(self.target_modules)}")


@dataclass
class FinetuneConfig:
    """How a run adapts the model; the defaults are a full fine-tune with timm's weight-decay groups."""

    method: Method = "full"
    trainable_blocks: int | None = None  # freeze only
    lora: LoraSettings | None = None  # lora only (defaults when omitted)
    layer_decay: float | None = None
    filter_bias_and_bn: bool = True
    ema_decay: float | None = None
    ema_warmup: bool = True  # timm's decay warm-up: 1 - (1 + step) ** -2/3, capped at ema_decay

    def __post_init__(self) -> None:
        self._check_method_keys()
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"finetune.layer_decay: must be in (0, 1], got {self.layer_decay}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"finetune.ema_decay: must be in (0, 1), got {self.ema_decay}")

    def _check_method_keys(self) -> None:
        if self.method == "freeze" and self.trainable_blocks is None:
            raise ConfigError("finetune.trainable_blocks: required with finetune.method: freeze "
                              "(the number of last encoder layers that train)")
        if self.method != "freeze" and self.trainable_blocks is not None:
            raise ConfigError(f"finetune.trainable_blocks: applies only to finetune.method: freeze, "
                              f"not {self.method}")
        if self.trainable_blocks is not None and self.trainable_blocks < 0:
            raise ConfigError(f"finetune.trainable_blocks: must be >= 0, got {self.trainable_blocks}")
        if self.method != "lora" and self.lora is not None:
            raise ConfigError(f"finetune.lora: applies only to finetune.method: lora, not {self.method}")
        if self.method == "lora" and self.lora is None:
            self.lora = LoraSettings()
