"""Peak matrix-multiply throughput of this device: the hardware limit that MFU is measured against.

Large square matmuls (n × n @ n × n = 2n³ FLOPs), best of a few repeats. bf16 on a CPU without bf16
matrix instructions (no AMX / AVX512-BF16) is emulated and far slower than fp32, so there the bf16
matmul is kept small and short: it is measured to show the gap, not to be used.
"""

from __future__ import annotations

import time

import torch

from benchmarks.machine import synchronize
from vit_finetune.precision import bf16_is_fast, compute_device


def matmul_flops_per_s(dtype: torch.dtype, n: int, repeats: int = 3, device: torch.device | None = None) -> float:
    """Best FLOP/s over `repeats` timed n × n matmuls in `dtype` (after one warm-up)."""
    device = device or compute_device()
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: kernel selection, page faults
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def peak_matmul(fp32_size: int, bf16_size: int, slow_bf16_size: int, repeats: int = 8) -> dict:
    """Peak fp32 and bf16 matmul FLOP/s on the benchmark device, and which one MFU is reported against.

    MFU uses the peak of the precision the training actually runs in (`bf16` where it is fast).
    """
    device = compute_device()
    fast_bf16 = bf16_is_fast(device)
    fp32 = matmul_flops_per_s(torch.float32, fp32_size, repeats, device)
    bf16_n = bf16_size if fast_bf16 else slow_bf16_size
    bf16 = matmul_flops_per_s(torch.bfloat16, bf16_n, 1 if not fast_bf16 else repeats, device)
    reference = "bf16" if fast_bf16 else "fp32"
    return {"device": device.type, "fp32_flops_per_s": fp32, "fp32_matrix_size": fp32_size,
            "bf16_flops_per_s": bf16, "bf16_matrix_size": bf16_n, "bf16_fast": fast_bf16,
            "bf16_over_fp32": bf16 / fp32, "mfu_reference": reference,
            "mfu_reference_flops_per_s": bf16 if fast_bf16 else fp32}
