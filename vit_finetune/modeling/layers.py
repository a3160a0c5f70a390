"""Building blocks of the from-scratch vision encoder, one class per concept.

Shapes: B batch, N tokens, D hidden size, H heads, Dh = D / H head size, P patch size.

Attention is computed one way per module, named as HF's `attn_implementation`: `"sdpa"` (torch's fused
`scaled_dot_product_attention`, the default) or `"eager"` (the three ops spelled out). Both compute
the same function; which kernel is faster depends on the machine and the shapes, so the choice
belongs to the caller (`set_attn_implementation`; training can measure both at start-up).
"""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import AttnImplementation, EncoderConfig

ATTN_IMPLEMENTATIONS: tuple[AttnImplementation, ...] = typing.get_args(AttnImplementation)

# `hidden_act` names as HF writes them in config.json -> activation module factory.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": lambda: nn.GELU(approximate="none"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "quick_gelu": lambda: QuickGELU(),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the CLIP approximation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: str) -> nn.Module:
    """The activation module for an HF `hidden_act` name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class PatchEmbedding(nn.Module):
    """Cut the image into P x P patches and project each to D dims with one strided Conv2d."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=p, stride=p, bias=config.patch_bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.proj(pixel_values)  # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class PatchDropout(nn.Module):
    """While training, keep a random subset of each image's patch tokens (prefix tokens always kept).

    Liu et al. 2022, "PatchDropout: Economizing Vision Transformers Using Patch Dropout" (timm's
    `patch_drop_rate`): fewer tokens make every layer cheaper, and act as a regulariser. Identity in eval.
    """

    def __init__(self, prob: float, num_prefix_tokens: int):
        super().__init__()
        self.prob, self.num_prefix_tokens = prob, num_prefix_tokens

    def num_kept(self, num_patches: int) -> int:
        """Patch tokens kept per image while training (at least one)."""
        return max(1, int(num_patches * (1.0 - self.prob)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0.0:
            return x
        prefix, patches = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]  # (B, P, D), (B, N, D)
        B, N, D = patches.shape
        kept = torch.rand(B, N, device=x.device).argsort(dim=1)[:, : self.num_kept(N)]  # (B, K) token indices
        patches = patches.gather(1, kept.unsqueeze(-1).expand(-1, -1, D))  # (B, K, D)
        return torch.cat([prefix, patches], dim=1)  # (B, P+K, D)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, H, N, Dh)."""
    B, N, D = x.shape
    return x.view(B, N, num_heads, D // num_heads).transpose(1, 2)  # (B, H, N, Dh)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, Dh) -> (B, N, D)."""
    B, H, N, Dh = x.shape
    return x.transpose(1, 2).reshape(B, N, H * Dh)  # (B, N, D)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, implementation: AttnImplementation = "sdpa"
) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(Dh)) v on (B, H, N, Dh) tensors, fused (`sdpa`) or spelled out (`eager`)."""
    if implementation == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, H, Nq, Dh)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk)
    weights = F.dropout(scores.softmax(dim=-1), p=dropout_p)  # (B, H, Nq, Nk)
    return weights @ v  # (B, H, Nq, Dh)


class Attention(nn.Module):
    """Multi-head self-attention. q, k, v are one fused Linear (D -> 3D), like nanoGPT's `c_attn`."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        D = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.attn_dropout = config.attention_probs_dropout_prob
        self.attn_implementation: AttnImplementation = "sdpa"
        self.qkv = nn.Linear(D, 3 * D, bias=config.qkv_bias)
        self.proj = nn.Linear(D, D)
        self.proj_drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads)  # (B, N, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, N, Dh)
        dropout_p = self.attn_dropout if self.training else 0.0
        x = attend(q, k, v, dropout_p, self.attn_implementation)  # (B, H, N, Dh)
        return self.proj_drop(self.proj(merge_heads(x)))  # (B, N, D)


class MLP(nn.Module):
    """Linear(D -> intermediate) -> activation -> Linear(intermediate -> D)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = make_activation(config.hidden_act)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class SwiGLU(nn.Module):
    """DINOv2's SwiGLU MLP: one Linear (D -> 2I) gives gate and value, silu(gate) * value, Linear(I -> D).

    Names as in the DINOv2 code (`w12`, `w3`); HF files store them as `weights_in` / `weights_out`.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.w12 = nn.Linear(config.hidden_size, 2 * config.intermediate_size)
        self.w3 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)  # 2 x (B, N, I)
        return self.drop(self.w3(F.silu(gate) * value))


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (DINOv2, CaiT), initialised to `init_value`."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: while training, zero a residual branch for a random share `prob` of the samples
    and scale the kept ones by 1 / (1 - prob) (timm's `DropPath`). Identity in eval."""

    def __init__(self, prob: float):
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0.0:
            return x
        keep = 1.0 - self.prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (B, 1, 1)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"prob={self.prob}"


def drop_path_rates(config: EncoderConfig) -> list[float]:
    """Per-layer stochastic-depth rates, rising linearly from 0 to `drop_path_rate` (DeiT, timm)."""
    last = max(config.num_hidden_layers - 1, 1)
    return [config.drop_path_rate * index / last for index in range(config.num_hidden_layers)]


class EncoderLayer(nn.Module):
    """Pre-LN transformer block; each branch optionally scaled (LayerScale) and dropped per sample (DropPath)."""

    def __init__(self, config: EncoderConfig, drop_path: float = 0.0):
        super().__init__()
        D, scale = config.hidden_size, config.layerscale_value
        self.norm1 = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.attn = Attention(config)
        self.ls1 = LayerScale(D, scale) if scale is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.mlp = SwiGLU(config) if config.use_swiglu_ffn else MLP(config)
        self.ls2 = LayerScale(D, scale) if scale is not None else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return x


class Encoder(nn.Module):
    """The stack of `num_hidden_layers` encoder layers.

    With activation checkpointing on (`checkpoint_fn` set, see `ImageClassifier.activation_checkpointing_enable`),
    every `checkpoint_every`-th layer keeps only its input while training and recomputes the rest
    in the backward pass.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config, rate) for rate in drop_path_rates(config))
        self.checkpoint_fn: Callable[..., torch.Tensor] | None = None
        self.checkpoint_every = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            if self.training and self.checkpoint_fn is not None and index % self.checkpoint_every == 0:
                x = self.checkpoint_fn(layer, x)
            else:
                x = layer(x)
        return x


def checkpoint_function(kwargs: dict | None = None, offload: bool = False) -> Callable[..., torch.Tensor]:
    """`torch.utils.checkpoint.checkpoint` bound to `kwargs` (default non-reentrant); with `offload`, the
    tensors it saves are kept in CPU memory (pinned when CUDA is present)."""
    kwargs = {"use_reentrant": False} | dict(kwargs or {})
    if not offload:
        return functools.partial(checkpoint, **kwargs)

    def offloaded(function: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
            return checkpoint(function, *args, **kwargs)

    return offloaded


class AttentionPoolingHead(nn.Module):
    """SigLIP "MAP" pooling: a learned probe attends over the tokens, then a residual MLP.

    `in_proj` keeps nn.MultiheadAttention's fused (3D, D) layout so HF `head.attention.in_proj_*`
    load by renaming; the probe uses its q rows, the tokens its k and v rows.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        D = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.attn_implementation: AttnImplementation = "sdpa"
        self.probe = nn.Parameter(torch.zeros(1, 1, D))
        self.in_proj = nn.Linear(D, 3 * D)
        self.out_proj = nn.Linear(D, D)
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        D = x.shape[-1]
        w_q, w_kv = self.in_proj.weight.split([D, 2 * D])
        b_q, b_kv = self.in_proj.bias.split([D, 2 * D])
        q = F.linear(self.probe.expand(x.shape[0], -1, -1), w_q, b_q)  # (B, 1, D)
        k, v = F.linear(x, w_kv, b_kv).chunk(2, dim=-1)  # 2 x (B, N, D)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))  # (B, H, 1 or N, Dh)
        x = self.out_proj(merge_heads(attend(q, k, v, 0.0, self.attn_implementation)))  # (B, 1, D)
        x = x + self.mlp(self.norm(x))
        return x[:, 0]  # (B, D)


def set_attn_implementation(model: nn.Module, name: AttnImplementation) -> None:
    """Compute every attention module of `model` with `name`: `"sdpa"` (fused) or `"eager"` (spelled out)."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"unknown attn_implementation {name!r}; expected one of {list(ATTN_IMPLEMENTATIONS)}")
    for module in model.modules():
        if isinstance(module, (Attention, AttentionPoolingHead)):
            module.attn_implementation = name
