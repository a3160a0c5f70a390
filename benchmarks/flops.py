"""Analytic FLOP count of a ViT / SigLIP classifier: what a training step has to compute.

Counts the matrix multiplications only (2 FLOPs per multiply-add), which is where > 98 % of a
ViT's arithmetic is; LayerNorm, GELU, softmax, residual adds and the optimiser are left out, as in
the usual model-FLOPs-utilisation (MFU) convention (PaLM appendix B, Chinchilla). With T tokens
(N patches + CLS), D hidden, I intermediate, P patch, C channels, L layers, K labels, per image:

    patch embedding   2 · N · (C·P·P) · D
    per layer         qkv 2·T·D·3D, QKᵀ 2·T·T·D, AV 2·T·T·D, output 2·T·D·D, MLP 2·T·D·I·2
    head              2 · D · K          (+ the MAP head for SigLIP `map` pooling)

Training = forward × 3 (the backward pass costs two forwards: input and weight gradients).
"""

from __future__ import annotations

from vit_finetune.modeling.config import EncoderConfig

TRAINING_FORWARD_MULTIPLE = 3


def flops_breakdown(config: EncoderConfig, num_labels: int, pooling: str = "cls") -> dict[str, int]:
    """Forward matmul FLOPs per image, by part (patch_embed, qkv, attention_scores, attention_values,
    attention_output, mlp, head)."""
    N, D, I, L = config.num_patches, config.hidden_size, config.intermediate_size, config.num_hidden_layers
    T = N + config.num_prefix_tokens
    parts = {
        "patch_embed": 2 * N * config.num_channels * config.patch_size**2 * D,
        "qkv": L * 2 * T * D * 3 * D,
        "attention_scores": L * 2 * T * T * D,  # q kᵀ over all heads
        "attention_values": L * 2 * T * T * D,  # softmax(.) v
        "attention_output": L * 2 * T * D * D,
        "mlp": L * 2 * T * D * I * 2,
        "head": 2 * D * num_labels,
    }
    if pooling == "map":  # one probe query attends over the N patch tokens, then a residual MLP
        parts["head"] += 2 * D * D + 2 * N * D * 2 * D + 2 * 2 * N * D + 2 * D * D + 2 * D * I * 2
    return parts


def forward_flops_per_image(config: EncoderConfig, num_labels: int, pooling: str = "cls") -> int:
    """Matmul FLOPs of one forward pass for one image."""
    return sum(flops_breakdown(config, num_labels, pooling).values())


def training_flops_per_image(config: EncoderConfig, num_labels: int, pooling: str = "cls") -> int:
    """Matmul FLOPs of one training step (forward + backward) per image: forward × 3."""
    return TRAINING_FORWARD_MULTIPLE * forward_flops_per_image(config, num_labels, pooling)
