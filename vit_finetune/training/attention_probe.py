"""Choose the attention kernel for a training run by timing both on one encoder layer at start-up.

Which of `sdpa` (torch's fused kernel) and `eager` (plain matmuls and softmax) trains faster depends
on the machine, the precision and the shapes: short sequences of narrow heads on some CPUs train
faster with the plain ops, most other settings with SDPA. Both compute the same function.

The probe builds one encoder layer of the run's config on the run's device and times forward +
backward passes at the run's token count and batch (cut where one pass would take longer than
`PASS_SECONDS`), under the run's autocast dtype: each round times one pass of each implementation,
back to back. `eager` replaces the default only when it is at least `EAGER_MARGIN` faster in every
round, so near-ties and measurements disturbed by other work on the machine keep `sdpa`. Each
setting is measured once per process, and the global RNG state is left as it was.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass

import torch

from vit_finetune.modeling.config import AttnImplementation, EncoderConfig
from vit_finetune.modeling.layers import ATTN_IMPLEMENTATIONS, EncoderLayer, set_attn_implementation

PROBE_ROUNDS = 4  # timed rounds (one pass of each implementation), after one warm-up round
PASS_SECONDS = 0.2  # the probe batch is cut so that one pass takes about this long at most
SIZING_BATCH = 4  # samples of the pass that estimates the time of a whole batch
EAGER_MARGIN = 0.05  # eager must be this much faster than sdpa (the default) in every round to be chosen


@dataclass(frozen=True)
class ProbeResult:
    """The chosen implementation and what it was based on."""

    choice: AttnImplementation
    seconds: dict[str, float]  # fastest forward + backward pass of one layer, in seconds
    eager_rounds: int  # rounds in which eager was at least EAGER_MARGIN faster
    batch_size: int
    num_tokens: int

    def describe(self) -> str:
        timings = ", ".join(f"{name} {1e3 * s:.2f} ms" for name, s in self.seconds.items())
        return (f"{self.choice} (one layer, batch {self.batch_size} x {self.num_tokens} tokens, fastest pass: "
                f"{timings}; eager ahead in {self.eager_rounds} of {PROBE_ROUNDS} rounds)")


@functools.cache
def probe_attn_implementation(
    config: EncoderConfig, batch_size: int, num_tokens: int, device: torch.device, autocast_dtype: torch.dtype | None
) -> ProbeResult:
    """The faster attention implementation for training `config` at (batch_size, num_tokens) on `device`."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        layer = EncoderLayer(config).to(device).train()
        tokens = torch.randn(batch_size, num_tokens, config.hidden_size, device=device)  # (B, T, D)
        tokens = tokens[: probe_batch_size(layer, tokens, autocast_dtype)]  # (B', T, D)
        times: dict[str, list[float]] = {name: [] for name in ATTN_IMPLEMENTATIONS}
        for round_ in range(1 + PROBE_ROUNDS):
            for name in ATTN_IMPLEMENTATIONS[:: 1 if round_ % 2 == 0 else -1]:
                set_attn_implementation(layer, name)
                times[name].append(timed_pass(layer, tokens, autocast_dtype))
    rounds = list(zip(times["sdpa"][1:], times["eager"][1:]))  # the first round warms up
    eager_rounds = sum(eager < (1.0 - EAGER_MARGIN) * sdpa for sdpa, eager in rounds)
    choice = "eager" if eager_rounds == PROBE_ROUNDS else "sdpa"
    seconds = {name: min(t[1:]) for name, t in times.items()}
    return ProbeResult(choice, seconds, eager_rounds, len(tokens), num_tokens)


def probe_batch_size(layer: torch.nn.Module, tokens: torch.Tensor, autocast_dtype: torch.dtype | None) -> int:
    """How many of the (B, T, D) `tokens` to probe with: all B, or as many as fit in `PASS_SECONDS`.

    Estimated from the faster of two passes of `SIZING_BATCH` samples after a warm-up pass, so that
    a large model on a CPU probes with a few images instead of a whole batch.
    """
    sample = tokens[:SIZING_BATCH]  # (b, T, D)
    timed_pass(layer, sample, autocast_dtype)  # warm-up: allocations, kernel selection
    seconds_per_sample = min(timed_pass(layer, sample, autocast_dtype) for _ in range(2)) / len(sample)
    return max(1, min(len(tokens), int(PASS_SECONDS / seconds_per_sample)))


def timed_pass(layer: torch.nn.Module, x: torch.Tensor, autocast_dtype: torch.dtype | None) -> float:
    """Seconds for one forward + backward of `layer` on (B, T, D) tokens, the device synchronised at both ends."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    autocast = torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    _synchronize(x.device)
    start = time.perf_counter()
    with autocast:
        out = layer(x)  # (B, T, D)
    out.float().sum().backward()
    _synchronize(x.device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)
