"""Training-step speed and peak memory of our model vs image size and batch size.

Each point runs in a fresh subprocess (`python -m benchmarks.scaling '<point json>'`) so that
its allocator starts clean: on the CPU the reading is the sampled peak RSS above the RSS with the
model loaded (optimizer state, gradients, activations); on a GPU, `torch.cuda.max_memory_allocated`
above the loaded model. Another image size than the checkpoint's loads it with interpolated position
embeddings, as `model.image_size=384` does in a run config.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import PeakMemory, synchronize
from vit_finetune.config import ModelSection
from vit_finetune.modeling.config import ClassifierConfig
from vit_finetune.modeling.hub import read_config_json
from vit_finetune.training.model_setup import build_model
from vit_finetune.precision import autocast_dtype, compute_device, resolve_precision

MIB = 2**20


def training_step_point(checkpoint: str, image_size: int, batch_size: int, steps: int, warmup: int = 1) -> dict:
    """Images/s (median step) and peak memory of forward + backward + AdamW on random pixels, in this process."""
    device = compute_device()
    id2label = ClassifierConfig.from_hf_config(read_config_json(Path(checkpoint))).id2label
    section = ModelSection(checkpoint=checkpoint, encoder={"image_size": image_size})
    model = build_model(section, id2label).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    pixels = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, len(id2label), (batch_size,), device=device)
    precision = resolve_precision("auto")
    dtype = autocast_dtype(precision)
    seconds = []
    with PeakMemory(device) as memory:
        for _ in range(warmup + steps):
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
                loss = model(pixels, labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            seconds.append(time.perf_counter() - start)
    step = statistics.median(seconds[warmup:])
    return {"image_size": image_size, "batch_size": batch_size, "tokens": model.config.encoder.num_patches + 1,
            "precision": precision, "device": device.type, "step_s": step, "images_per_s": batch_size / step,
            "step_peak_mib": memory.peak_bytes / MIB, "loaded_mib": memory.baseline / MIB}


def run_point_subprocess(checkpoint: str | Path, image_size: int, batch_size: int, steps: int, warmup: int = 1,
                         timeout: float = 600) -> dict:
    """`training_step_point` in a fresh Python process (clean peak-memory reading); its JSON result."""
    point = {"checkpoint": str(checkpoint), "image_size": image_size, "batch_size": batch_size,
             "steps": steps, "warmup": warmup}
    repo_root = str(Path(__file__).resolve().parents[1])  # benchmarks/ is not installed: the child finds it here
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "benchmarks.scaling", json.dumps(point)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"scaling point {point} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scaling_curves(checkpoint: str | Path, base_image_size: int, base_batch_size: int, image_sizes: list[int],
                   batch_sizes: list[int], steps: int, warmup: int = 1) -> dict[str, list[dict]]:
    """Images/s and peak memory vs image size (at `base_batch_size`) and vs batch size (at `base_image_size`)."""
    measured: dict[tuple[int, int], dict] = {}

    def point(image_size: int, batch_size: int) -> dict:
        if (image_size, batch_size) not in measured:
            measured[image_size, batch_size] = run_point_subprocess(checkpoint, image_size, batch_size, steps, warmup)
        return measured[image_size, batch_size]

    return {"by_image_size": [point(size, base_batch_size) for size in image_sizes],
            "by_batch_size": [point(base_image_size, batch) for batch in batch_sizes]}


def main(argv: list[str] | None = None) -> None:
    """Subprocess entry: one point given as JSON; prints the result as one JSON line."""
    point: dict[str, Any] = json.loads((sys.argv[1:] if argv is None else argv)[0])
    print(json.dumps(training_step_point(**point)), flush=True)


if __name__ == "__main__":
    main()
