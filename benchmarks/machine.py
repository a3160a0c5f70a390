"""What the benchmark ran on: device choice, a description of the machine, and peak-memory readings."""

from __future__ import annotations

import os
import platform
import resource
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from vit_finetune.precision import compute_device, cpu_has_fast_bf16, resolve_precision


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """The vector / matrix instruction sets that decide fp32 and bf16 speed (AVX2, AVX-512, AMX)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return [flag for flag in wanted if flag in flags]


def machine_info() -> dict[str, Any]:
    """CPU model, cores, features, torch / transformers versions, threads, the GPU if any, and precision."""
    import transformers

    device = compute_device()
    info = {
        "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "cpu_features": cpu_features(),
        "cpu_fast_bf16": cpu_has_fast_bf16(), "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "torch_threads": torch.get_num_threads(), "device": device.type,
        "training_precision": resolve_precision("auto"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_summary(info: dict[str, Any]) -> str:
    """One line: `AMD EPYC, 2 cores (avx2, fma), torch 2.13.0+cpu, 2 threads, CPU, fp32`."""
    features = f" ({', '.join(info['cpu_features'])})" if info["cpu_features"] else ""
    device = info.get("gpu", "CPU")
    return (f"{info['cpu']}, {info['cpu_cores']} cores{features}, torch {info['torch']}, "
            f"transformers {info['transformers']}, {info['torch_threads']} threads, {device}, "
            f"training precision {info['training_precision']}")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings are complete (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_rss_bytes() -> int:
    """This process's peak resident set size so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
    """This process's resident set size now (/proc/self/statm); the peak so far where /proc is missing."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return max_rss_bytes()


class PeakMemory:
    """Peak memory above the level at entry while the block runs.

    GPU: `torch.cuda.max_memory_allocated` minus the allocation at entry. CPU: the resident set size
    sampled every `interval` seconds by a thread (torch ops release the GIL, so it keeps sampling)
    minus the RSS at entry; `ru_maxrss` cannot be used for this because it is a lifetime maximum.
    """

    def __init__(self, device: torch.device, interval: float = 0.002):
        self.device, self.interval = device, interval
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = self.peak = current_rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_bytes())

    @property
    def peak_bytes(self) -> int:
        """Peak bytes above the level at entry."""
        return max(self.peak - self.baseline, 0)
