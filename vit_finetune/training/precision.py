"""Mixed precision: `auto` picks bf16 only where the hardware runs it fast."""

from __future__ import annotations

from pathlib import Path

import torch


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AMX or AVX512-BF16).

    Without them PyTorch emulates bf16 matmuls, which is far slower than fp32 (measured on an
    AVX2-only EPYC: ~0.8 GFLOP/s bf16 vs ~50-120 GFLOP/s fp32), so `auto` must not pick bf16 there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
    """Turn `auto` into `bf16`, `fp16` or `fp32` for the device this process will train on."""
    if precision != "auto":
        if precision == "fp16" and not torch.cuda.is_available():
            raise ValueError("precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def precision_arguments(precision: str) -> dict[str, bool]:
    """`TrainingArguments` flags for a resolved precision."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}
