"""The vision encoder (embeddings + encoder + final LayerNorm) and the image classifier on top.

Token layout: [CLS] [distillation] [registers] patches. The position table covers the CLS and
distillation tokens and the patches; register tokens (DINOv2) are inserted after positions are added.

Initialisation (random, i.e. not loaded) follows timm / HF ViT: truncated normal with
std=`initializer_range` for every Linear / Conv2d weight, the CLS, distillation and register tokens,
the position table (MAE: fixed 2-D sin-cos) and the MAP probe; zero biases; LayerNorm weight 1, bias 0;
LayerScale at `layerscale_value`. The classifier head gets the same truncated normal (as HF
`ViTForImageClassification` does for a new head) rather than zeros, so that the encoder receives a
gradient from the very first step.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from .config import ClassifierConfig, EncoderConfig
from .layers import AttentionPoolingHead, Encoder, PatchDropout, PatchEmbedding, checkpoint_function
from .positions import resize_pos_embed, sincos_pos_embed

logger = logging.getLogger(__name__)


@torch.no_grad()
def init_weights(module: nn.Module, std: float) -> None:
    """timm / HF-style init of one module's own Linear, Conv2d or LayerNorm weights."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def param_group(key: str) -> str:
    """The part of the model a state-dict key belongs to: `backbone`, `pool` or `classifier` (the
    DeiT distillation head is part of the classifier)."""
    top = key.split(".", 1)[0]
    return "classifier" if top == "distillation_classifier" else top


def learned_tokens(count: int, dim: int) -> nn.Parameter | None:
    """A (1, count, D) parameter of learned tokens, or None when the family has none."""
    return nn.Parameter(torch.zeros(1, count, dim)) if count else None


class VisionEncoder(nn.Module):
    """Patch embedding, prefix tokens, positions, optional pre-norm, pre-LN encoder, final LayerNorm."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        D, T = config.hidden_size, config.num_position_prefix_tokens + config.num_patches
        self.config = config
        self.patch_embed = PatchEmbedding(config)
        self.cls_token = learned_tokens(int(config.class_token), D)  # (1, 1, D)
        self.dist_token = learned_tokens(int(config.distillation_token), D)  # (1, 1, D)
        self.reg_token = learned_tokens(config.num_register_tokens, D)  # (1, R, D)
        self.pos_embed = nn.Parameter(torch.zeros(1, T, D))  # (1, T, D): CLS, distillation token, patches
        self.pos_drop = nn.Dropout(config.hidden_dropout_prob)
        self.patch_drop = PatchDropout(config.patch_dropout, config.num_prefix_tokens)
        self.pre_norm = nn.LayerNorm(D, eps=config.layer_norm_eps) if config.pre_norm else nn.Identity()
        self.encoder = Encoder(config)
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.init_weights()

    def init_weights(self) -> None:
        """Random init of every weight (see the module docstring)."""
        std, config = self.config.initializer_range, self.config
        self.apply(lambda m: init_weights(m, std))
        for tokens in (self.cls_token, self.dist_token, self.reg_token):
            if tokens is not None:
                nn.init.trunc_normal_(tokens, std=std)
        if config.sincos_positions:
            with torch.no_grad():
                self.pos_embed.copy_(sincos_pos_embed(config.grid_size, config.hidden_size,
                                                      config.num_position_prefix_tokens))
        else:
            nn.init.trunc_normal_(self.pos_embed, std=std)

    def num_training_tokens(self) -> int:
        """Tokens per image that enter the encoder while training (prefix + patches kept by PatchDropout)."""
        return self.config.num_prefix_tokens + self.patch_drop.num_kept(self.config.num_patches)

    def positions_for(self, height: int, width: int, interpolate_pos_encoding: bool) -> torch.Tensor:
        """Position table for an input of height x width pixels, interpolated if asked and needed."""
        P, config = self.config.patch_size, self.config
        grid = (height // P, width // P)
        if grid == (config.grid_size, config.grid_size):
            return self.pos_embed  # (1, T, D)
        if not interpolate_pos_encoding:
            raise ValueError(
                f"input is {height}x{width} px but the model is {config.image_size} px;"
                " pass interpolate_pos_encoding=True or load with image_size="
            )
        return resize_pos_embed(self.pos_embed, grid, config.num_position_prefix_tokens,
                                antialias=config.interpolate_antialias)  # (1, T', D)

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Pixels (B, C, H, W) -> input tokens (B, T, D) with positions added."""
        B, _, H, W = pixel_values.shape
        prefix = [t.expand(B, -1, -1) for t in (self.cls_token, self.dist_token) if t is not None]  # (B, 1, D) each
        x = torch.cat([*prefix, self.patch_embed(pixel_values)], dim=1)  # (B, P+N, D)
        x = x + self.positions_for(H, W, interpolate_pos_encoding)  # (B, P+N, D)
        if self.reg_token is not None:
            P = self.config.num_position_prefix_tokens
            x = torch.cat([x[:, :P], self.reg_token.expand(B, -1, -1), x[:, P:]], dim=1)  # (B, P+R+N, D)
        x = self.patch_drop(self.pos_drop(x))  # (B, T', D): T' < T only while training with patch_dropout
        return self.pre_norm(x)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Pixels (B, C, H, W) -> final hidden states (B, T, D): after the final LayerNorm when it applies to
        every token (`final_norm="tokens"`), else the last layer's output, as the family's HF model returns it."""
        x = self.encoder(self.embed(pixel_values, interpolate_pos_encoding))  # (B, T, D)
        return self.norm(x) if self.config.final_norm == "tokens" else x


class ImageClassifier(nn.Module):
    """VisionEncoder + pooling (`cls` / `mean` / `map` / `cls_mean` / `cls_distill`) + linear classifier.

    `forward` returns `ImageClassifierOutput(loss, logits)` so the HF Trainer can drive it; the
    activation-checkpointing methods are the ones the Trainer calls.
    """

    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        D, L = config.encoder.hidden_size, config.num_labels
        self.config = config
        self.backbone = VisionEncoder(config.encoder)
        self.pool = AttentionPoolingHead(config.encoder) if config.pooling == "map" else None
        features = 2 * D if config.pooling == "cls_mean" else D
        self.classifier = nn.Linear(features, L) if L > 0 else nn.Identity()
        self.distillation_classifier = nn.Linear(D, L) if config.pooling == "cls_distill" and L > 0 else None
        self.init_head()

    def init_head(self) -> None:
        """Random init of the pooling head (if any) and the classifier(s); the backbone is left alone."""
        std = self.config.encoder.initializer_range
        for head in (self.classifier, self.distillation_classifier, self.pool):
            if head is not None:
                head.apply(lambda m: init_weights(m, std))
        if self.pool is not None:
            nn.init.trunc_normal_(self.pool.probe, std=std)

    def forward_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Pixels (B, C, H, W) -> final hidden states (B, T, D)."""
        return self.backbone(pixel_values, interpolate_pos_encoding)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, T, D) -> pooled features (see `pool_tokens`) if `pre_logits`, else logits (B, num_labels)."""
        pooled = self.pool_tokens(tokens)
        if pre_logits:
            return pooled
        if self.distillation_classifier is None:
            return self.classifier(pooled)
        return (self.classifier(pooled[:, 0]) + self.distillation_classifier(pooled[:, 1])) / 2

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, D) -> (B, D): CLS token, mean over patch tokens, or attention pooling of
        the patch tokens; (B, 2D) CLS and mean side by side for `cls_mean`; (B, 2, D) CLS and distillation
        token for `cls_distill`. The final LayerNorm follows where `final_norm` puts it after pooling."""
        pooling, prefix = self.config.pooling, self.config.encoder.num_prefix_tokens
        if pooling == "cls_distill":
            return self.norm_pooled(tokens[:, :2], reads_cls=True)  # (B, 2, D)
        parts = []
        if pooling in ("cls", "cls_mean"):
            parts.append(self.norm_pooled(tokens[:, 0], reads_cls=True))  # (B, D)
        if pooling in ("mean", "cls_mean"):
            parts.append(self.norm_pooled(tokens[:, prefix:].mean(dim=1)))  # (B, D)
        if pooling == "map":
            parts.append(self.norm_pooled(self.pool(tokens[:, prefix:])))  # (B, D)
        return torch.cat(parts, dim=-1)  # (B, D) or (B, 2D)

    def norm_pooled(self, pooled: torch.Tensor, reads_cls: bool = False) -> torch.Tensor:
        """The final LayerNorm on a pooled vector where the family puts it there: MAE's fc_norm
        (`final_norm="pooled"`), CLIP's post_layernorm on the CLS token (`final_norm="cls"`)."""
        where = self.config.encoder.final_norm
        return self.backbone.norm(pooled) if where == "pooled" or (where == "cls" and reads_cls) else pooled

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> ImageClassifierOutput:
        """Logits for a batch of images, plus the cross-entropy loss when `labels` are given."""
        logits = self.forward_head(self.forward_features(pixel_values, interpolate_pos_encoding))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    # ---- activation (gradient) checkpointing, under the names the HF Trainer calls -------------

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        every_n_layers: int = 1, offload: bool = False) -> None:
        """While training, every `every_n_layers`-th encoder layer keeps only its input and is recomputed in
        the backward pass (non-reentrant `torch.utils.checkpoint`, which also replays dropout's random
        draws; `activation_checkpointing_kwargs` go to it). `offload` keeps the saved inputs in CPU memory."""
        self.backbone.encoder.checkpoint_fn = checkpoint_function(activation_checkpointing_kwargs, offload)
        self.backbone.encoder.checkpoint_every = every_n_layers
        logger.info("activation checkpointing: every %d of %d encoder layers", every_n_layers,
                    self.config.encoder.num_hidden_layers)

    def activation_checkpointing_disable(self) -> None:
        """Keep every activation again."""
        self.backbone.encoder.checkpoint_fn = None

    @property
    def is_activation_checkpointing(self) -> bool:
        return self.backbone.encoder.checkpoint_fn is not None

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs) -> None:
        """The older name of `activation_checkpointing_enable` (Trainer < 5.x, PEFT)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_disable(self) -> None:
        """The older name of `activation_checkpointing_disable`."""
        self.activation_checkpointing_disable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.is_activation_checkpointing


def build_classifier(config: ClassifierConfig) -> ImageClassifier:
    """A randomly initialised classifier (see the module docstring for the init scheme)."""
    return ImageClassifier(config)


def build_uninitialised_classifier(config: ClassifierConfig) -> ImageClassifier:
    """A classifier with allocated but unset weights, for loading a checkpoint into (skips the init cost)."""
    with torch.device("meta"):
        model = ImageClassifier(config)
    return model.to_empty(device="cpu")
