"""Where a training step's time goes: torch.profiler over one forward + backward, ops grouped by kind."""

from __future__ import annotations

from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

# aten ops that are matrix multiplications (incl. the convolution of the patch embedding).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
              "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution", "aten::convolution_backward",
              "aten::_addmm_activation")
ATTENTION_MARK = "attention"  # aten::_scaled_dot_product_*attention* and their backward


def op_kind(name: str) -> str:
    """`matmul`, `attention` (fused SDPA kernels) or `other` (norms, activations, copies, ...)."""
    if name in MATMUL_OPS:
        return "matmul"
    return "attention" if ATTENTION_MARK in name else "other"


def op_profile(model: torch.nn.Module, batch: dict[str, torch.Tensor], top: int = 6) -> dict[str, Any]:
    """Profile `model(**batch).loss.backward()` once (after a warm-up pass).

    Returns the total self CPU time, its share per kind of op, and the `top` ops by self CPU time.
    """
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    model.train()
    model(**batch).loss.backward()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_us = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for event in events:
        shares[op_kind(event.key)] += event.self_cpu_time_total / total_us
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"self_cpu_ms": total_us / 1e3, "share_by_kind": shares,
            "top_ops": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                         "share": e.self_cpu_time_total / total_us} for e in ranked]}
