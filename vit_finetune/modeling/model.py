"""The vision encoder (embeddings + encoder + final LayerNorm) and the image classifier on top.

Initialisation (random, i.e. not loaded) follows timm / HF ViT: truncated normal with
std=`initializer_range` for every Linear / Conv2d weight, the CLS token, the position table and the
MAP probe; zero biases; LayerNorm weight 1, bias 0. The classifier head gets the same truncated
normal (as HF `ViTForImageClassification` does for a new head) rather than zeros, so that the
encoder receives a gradient from the very first step.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from .config import ClassifierConfig, EncoderConfig
from .layers import AttentionPoolingHead, Encoder, PatchDropout, PatchEmbedding
from .losses import classification_loss
from .positions import resize_pos_embed


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


class VisionEncoder(nn.Module):
    """Patch embedding, optional CLS token, learned positions, pre-LN encoder, final LayerNorm."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        D, T = config.hidden_size, config.num_prefix_tokens + config.num_patches
        self.config = config
        self.patch_embed = PatchEmbedding(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if config.class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, T, D))  # (1, T, D): one learned position per token
        self.pos_drop = nn.Dropout(config.hidden_dropout_prob)
        self.patch_drop = PatchDropout(config.patch_dropout, config.num_prefix_tokens)
        self.encoder = Encoder(config)
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.init_weights()

    def init_weights(self) -> None:
        """Random init of every weight (see the module docstring)."""
        std = self.config.initializer_range
        self.apply(lambda m: init_weights(m, std))
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=std)
        nn.init.trunc_normal_(self.pos_embed, std=std)

    def num_training_tokens(self) -> int:
        """Tokens per image that enter the encoder while training (prefix + patches kept by PatchDropout)."""
        return self.config.num_prefix_tokens + self.patch_drop.num_kept(self.config.num_patches)

    def positions_for(self, height: int, width: int, interpolate_pos_encoding: bool) -> torch.Tensor:
        """Position table for an input of height x width pixels, interpolated if asked and needed."""
        P = self.config.patch_size
        grid = (height // P, width // P)
        if grid == (self.config.grid_size, self.config.grid_size):
            return self.pos_embed  # (1, T, D)
        if not interpolate_pos_encoding:
            raise ValueError(
                f"input is {height}x{width} px but the model is {self.config.image_size} px;"
                " pass interpolate_pos_encoding=True or load with image_size="
            )
        return resize_pos_embed(self.pos_embed, grid, self.config.num_prefix_tokens)  # (1, T', D)

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Pixels (B, C, H, W) -> input tokens (B, T, D) with positions added."""
        B, _, H, W = pixel_values.shape
        x = self.patch_embed(pixel_values)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1+N, D)
        x = self.pos_drop(x + self.positions_for(H, W, interpolate_pos_encoding))  # (B, T, D)
        return self.patch_drop(x)  # (B, T', D): T' < T only while training with patch_dropout

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Pixels (B, C, H, W) -> final hidden states (B, T, D), after the final LayerNorm."""
        x = self.embed(pixel_values, interpolate_pos_encoding)  # (B, T, D)
        return self.norm(self.encoder(x))  # (B, T, D)


class ImageClassifier(nn.Module):
    """VisionEncoder + pooling (`cls` / `mean` / `map`) + linear classifier.

    `forward` returns `ImageClassifierOutput(loss, logits)` so the HF Trainer can drive it.
    """

    main_input_name = "pixel_values"

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        D = config.encoder.hidden_size
        self.config = config
        self.backbone = VisionEncoder(config.encoder)
        self.pool = AttentionPoolingHead(config.encoder) if config.pooling == "map" else None
        self.classifier = nn.Linear(D, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.init_head()

    def init_head(self) -> None:
        """Random init of the pooling head (if any) and the classifier; the backbone is left alone."""
        std = self.config.encoder.initializer_range
        self.classifier.apply(lambda m: init_weights(m, std))
        if self.pool is not None:
            self.pool.apply(lambda m: init_weights(m, std))
            nn.init.trunc_normal_(self.pool.probe, std=std)

    def forward_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Pixels (B, C, H, W) -> final hidden states (B, T, D)."""
        return self.backbone(pixel_values, interpolate_pos_encoding)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, T, D) -> pooled features (B, D) if `pre_logits`, else logits (B, num_labels)."""
        pooled = self.pool_tokens(tokens)  # (B, D)
        return pooled if pre_logits else self.classifier(pooled)

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D): CLS token, mean over patch tokens, or attention pooling of the patch tokens."""
        if self.config.pooling == "cls":
            return tokens[:, 0]  # (B, D)
        patches = tokens[:, self.config.encoder.num_prefix_tokens :]  # (B, N, D)
        if self.config.pooling == "mean":
            return patches.mean(dim=1)  # (B, D)
        return self.pool(patches)  # (B, D)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> ImageClassifierOutput:
        """Logits for a batch of images, plus the loss of the config's `problem_type` when `labels` are given."""
        logits = self.forward_head(self.forward_features(pixel_values, interpolate_pos_encoding))
        loss = classification_loss(logits, labels, self.config.problem_type) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def build_classifier(config: ClassifierConfig) -> ImageClassifier:
    """A randomly initialised classifier (see the module docstring for the init scheme)."""
    return ImageClassifier(config)


def build_uninitialised_classifier(config: ClassifierConfig) -> ImageClassifier:
    """A classifier with allocated but unset weights, for loading a checkpoint into (skips the init cost)."""
    with torch.device("meta"):
        model = ImageClassifier(config)
    return model.to_empty(device="cpu")
