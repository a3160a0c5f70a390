"""Precision and device: the names a user gives, what `auto` means on this machine, and what each library calls them.

    precision = resolve_precision("auto")            # "bf16", "fp16" or "fp32" for this machine
    autocast_dtype(precision)                        # torch.bfloat16 / torch.float16 / None (no autocast)
    accelerate_mixed_precision(precision)            # "bf16" / "fp16" / "no" for `Accelerator(mixed_precision=...)`
    trainer_precision_flags(precision)               # {"bf16": ..., "fp16": ...} for `TrainingArguments`

`auto` picks bf16 only where the hardware runs it fast (CUDA GPUs with bf16, CPUs with AMX or
AVX512-BF16), fp16 on older GPUs, and fp32 elsewhere. Training, evaluation, prediction and the
benchmark all resolve precision and pick their device here. torch is imported inside the functions,
so the command lines can offer `--precision` choices and print `--help` without loading it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vit_finetune.typed import ConfigError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_AUTOCAST_NAMES = {"bf16": "bfloat16", "fp16": "float16"}  # fp32: no autocast
_ACCELERATE_NAMES = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


def compute_device() -> torch.device:
    """CUDA when present, else the CPU: the device accelerate and the Trainer pick in one process."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AMX or AVX512-BF16).

    Without them PyTorch emulates bf16 matmuls, far slower than fp32 (the peak matmul readings are
    in docs/BENCHMARKS.md), so `auto` must not pick bf16 there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 matmuls run on dedicated hardware on `device` (a GPU that supports bf16, or a CPU with AMX /
    AVX512-BF16)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def resolve_precision(precision: str, where: str = "precision") -> str:
    """`auto` -> `bf16`, `fp16` or `fp32` for `compute_device()`; an explicit name is checked against this machine.

    Raises `ConfigError` (its message starts with `where`, the setting's name) for an unknown name or for fp16
    without CUDA.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"{where}: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = compute_device()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"{where} fp16: needs a CUDA GPU; use bf16 or fp32 on the CPU")
    if precision != "auto":
        return precision
    if bf16_is_fast(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The `torch.autocast` dtype of a resolved precision; None for fp32 (no autocast)."""
    import torch

    name = _AUTOCAST_NAMES.get(precision)
    return getattr(torch, name) if name else None


def accelerate_mixed_precision(precision: str) -> str:
    """accelerate's `mixed_precision` name of a resolved precision (`no` for fp32)."""
    return _ACCELERATE_NAMES[precision]


def trainer_precision_flags(precision: str) -> dict[str, bool]:
    """The `TrainingArguments` flags of a resolved precision."""
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def precision_of_trainer_flags(bf16: bool, fp16: bool) -> str:
    """The resolved precision that `TrainingArguments(bf16=..., fp16=...)` trains in."""
    return "bf16" if bf16 else "fp16" if fp16 else "fp32"
