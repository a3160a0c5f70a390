"""Forward + backward speed of our encoder vs the HF encoder with the same config.

    python -m benchmarks.encoder --arch vit --size base --image-size 224 --batch-size 8 --dtype bf16

Both models run interleaved (ours, HF, HF, ours, ...) so that machine noise hits both alike. On a
shared machine the fastest step is the least disturbed one, so images/s comes from the minimum wall
time of the timed steps (as `timeit` advises); `ratio` = ours / HF (> 1: ours is faster).
`cpu_ratio` compares the process CPU time per step instead, which other processes disturb less.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import transformers
from torch import nn

from benchmarks.machine import synchronize
from vit_finetune.modeling.config import EncoderConfig, encoder_config_for_size
from vit_finetune.modeling.model import VisionEncoder

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def hf_encoder(config: EncoderConfig) -> nn.Module:
    """HF `ViTModel` (no pooler) or `SiglipVisionModel` (no MAP head) with the same hyper-parameters."""
    vision = config.to_hf_vision_dict()
    if config.arch == "vit":
        return transformers.ViTModel(transformers.ViTConfig(**vision), add_pooling_layer=False)
    return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision, vision_use_head=False))


def _train_step(model: nn.Module, pixels: torch.Tensor, dtype: torch.dtype) -> tuple[float, float]:
    """One forward + backward; returns its (wall, process CPU) time in seconds."""
    device = pixels.device
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    with autocast:
        out = model(pixels)
        tokens = out if isinstance(out, torch.Tensor) else out.last_hidden_state  # (B, T, D)
    tokens.float().mean().backward()
    synchronize(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    model.zero_grad(set_to_none=True)
    return wall, cpu


def compare_encoder_speed(
    arch: str = "vit",
    size: str = "base",
    image_size: int = 224,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    steps: int = 3,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, float | int | str]:
    """Time forward+backward of our `VisionEncoder` vs the HF encoder (same config), interleaved.

    `dtype=torch.bfloat16` runs both under CPU bf16 autocast with fp32 weights (mixed precision).
    Returns images/s for both (fastest timed step), `ratio` = ours / HF, and `cpu_ratio` = HF / ours
    median process CPU time per step.
    """
    config = encoder_config_for_size(size, arch=arch, image_size=image_size)
    device = torch.device(device)
    models = {"ours": VisionEncoder(config).to(device).train(), "hf": hf_encoder(config).to(device).train()}
    pixels = torch.randn(batch_size, config.num_channels, image_size, image_size, device=device)
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "hf": []}
    for step in range(warmup + steps):
        for name in ["ours", "hf"] if step % 2 == 0 else ["hf", "ours"]:
            elapsed = _train_step(models[name], pixels, dtype)
            if step >= warmup:
                times[name].append(elapsed)
    speed = {name: batch_size / min(wall for wall, _ in t) for name, t in times.items()}
    cpu = {name: statistics.median(c for _, c in t) for name, t in times.items()}
    return dict(
        arch=arch, size=size, image_size=image_size, batch_size=batch_size, dtype=str(dtype).removeprefix("torch."),
        threads=torch.get_num_threads(), ours_images_per_s=speed["ours"], hf_images_per_s=speed["hf"],
        ratio=speed["ours"] / speed["hf"], cpu_ratio=cpu["hf"] / cpu["ours"],
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: print the comparison as one line per run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["vit", "siglip"], default="vit")
    parser.add_argument("--size", default="base")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["fp32"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    for dtype in args.dtype:
        result = compare_encoder_speed(
            args.arch, args.size, args.image_size, args.batch_size, DTYPES[dtype], args.steps, args.warmup
        )
        print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
