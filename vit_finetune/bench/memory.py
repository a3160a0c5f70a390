"""Activation memory of one training step, with and without activation (gradient) checkpointing.

    python -m vit_finetune.bench.memory --size B/16 --image-size 224 384 --batch-size 32

Counts the bytes autograd keeps for the backward pass at the end of the forward (every tensor saved
for backward, each storage once, parameters excluded): deterministic, on any device, and the part of
the peak that checkpointing changes (with checkpointing, the backward pass adds one recomputed layer's
activations at a time). On CUDA it also reports the peak allocated memory of the step
(`torch.cuda.max_memory_allocated`, weights and gradients included) and the step time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

from vit_finetune.modeling import ClassifierConfig, ImageClassifier, build_classifier, encoder_config_for_size


@contextlib.contextmanager
def saved_tensor_counter(exclude: set[int]):
    """Within the block, record the storages autograd saves for backward; yields {data_ptr: nbytes}."""
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in exclude:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield saved


def saved_activation_bytes(model: ImageClassifier, pixel_values: torch.Tensor, labels: torch.Tensor) -> int:
    """Bytes of the activations a training forward of `model` keeps for its backward (parameters excluded)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with saved_tensor_counter(parameters) as saved:
        loss = model(pixel_values, labels=labels).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(saved.values())


def cuda_step(model: ImageClassifier, pixel_values: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Peak allocated GiB and seconds of one forward + backward on CUDA (after one warm-up step)."""
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        model(pixel_values, labels=labels).loss.backward()
        torch.cuda.synchronize()
    return {"peak_gib": torch.cuda.max_memory_allocated() / 2**30, "step_s": time.perf_counter() - start}


def measure(size: str, image_size: int, batch_size: int, device: torch.device) -> dict[str, float]:
    """Saved activations (and on CUDA peak memory and step time) without and with checkpointing."""
    encoder = encoder_config_for_size(size, image_size=image_size)
    model = build_classifier(ClassifierConfig(encoder=encoder, num_labels=10)).to(device).train()
    pixels = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    result: dict[str, float] = {"image_size": image_size, "batch_size": batch_size}
    for name, enable in (("plain", model.activation_checkpointing_disable),
                         ("checkpointed", model.activation_checkpointing_enable)):
        enable()
        result[f"{name}_saved_gib"] = saved_activation_bytes(model, pixels, labels) / 2**30
        if device.type == "cuda":
            result |= {f"{name}_{key}": value for key, value in cuda_step(model, pixels, labels).items()}
    result["saved_ratio"] = result["checkpointed_saved_gib"] / result["plain_saved_gib"]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="B/16")
    parser.add_argument("--image-size", type=int, nargs="+", default=[224, 384])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    for image_size in args.image_size:
        print(json.dumps(measure(args.size, image_size, args.batch_size, torch.device(args.device))))


if __name__ == "__main__":
    main()
