"""Transfer table of the fine-tuning methods on real data, small enough for a 2-core CPU.

    python -m benchmarks.transfer --data ../shared/data/cifar10 --output runs/transfer

Pretrains the small ViT (`configs/cifar10-tiny.yaml`, without patch dropout) on the first five CIFAR-10
classes (airplane .. deer), then adapts it to the other five (dog .. truck) with each `finetune.method`
(full, freeze N=1, linear_probe, lora) and trains the same model from scratch, all for the same number of
steps at the same batch size, learning rate and schedule. Prints (and writes to OUTPUT/table.md and
results.json) the test accuracy (on 2000 of the 5000 test images of the five new classes), trainable
parameters, training images/s and minutes of each run. The class subsets are folders of symbolic links to the images under OUTPUT/data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

from vit_finetune.config import CONFIGS_DIR, run_config_from_dict
from vit_finetune.finetune_config import FinetuneConfig
from vit_finetune.modeling import load_classifier
from vit_finetune.training.finetune import prepare_model
from vit_finetune.training.run import train

EVAL_IMAGES = 2000  # stratified subset of the 5000 test images of the five classes
METHODS = {  # table row -> finetune section (None: from scratch, no checkpoint)
    "full": {"method": "full"},
    "freeze (N=1)": {"method": "freeze", "trainable_blocks": 1},
    "linear_probe": {"method": "linear_probe"},
    "lora (r=8, qkv+proj)": {"method": "lora"},
    "scratch": None,
}


def class_subset(data: Path, classes: list[str], dest: Path) -> Path:
    """An imagefolder `dest/{train,test}/<class>/` of links to `data`'s images of `classes`."""
    for split in ("train", "test"):
        for name in classes:
            folder = dest / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for image in (data / split / name).iterdir():
                link = folder / image.name
                if not link.exists():
                    link.symlink_to(image.resolve())
    return dest


def base_tree(dataset: Path, output_dir: Path, steps: int, batch_size: int) -> dict:
    """The tiny recipe on `dataset` for `steps` steps of `batch_size`: no validation split, no checkpoints, test
    at the end."""
    tree = yaml.safe_load((CONFIGS_DIR / "cifar10-tiny.yaml").read_text())
    tree["model"]["patch_dropout"] = 0.0  # the linear probe's encoder runs in eval mode: compare like with like
    tree["data"].update(dataset=str(dataset), validation_fraction=0.0, max_eval_samples=EVAL_IMAGES)
    tree["training"].update(output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=batch_size,
                            eval_strategy="no", save_strategy="no",
                            load_best_model_at_end=False, overwrite_output_dir=True, report_to="none")
    return tree


def adapt_tree(dataset: Path, output_dir: Path, steps: int, batch_size: int, pretrained: Path,
               finetune: dict | None) -> dict:
    """A run on the new classes: from the pretrained folder with `finetune`, or from scratch."""
    tree = base_tree(dataset, output_dir, steps, batch_size)
    if finetune is not None:
        tree["model"] = {"checkpoint": str(pretrained)}
        tree["finetune"] = finetune
    return tree


def timed_train(tree: dict) -> tuple[dict, float]:
    """The run's metrics and its wall time in minutes (data loading, training and the test evaluation)."""
    start = time.perf_counter()
    result = train(run_config_from_dict(tree))
    return result.metrics, (time.perf_counter() - start) / 60


def step_throughput(pretrained: Path, batch_size: int, rounds: int = 7, steps: int = 3) -> dict[str, float]:
    """Training images/s of each method's step (forward, backward, AdamW step) on one random batch, in
    interleaved rounds (median): the methods side by side under the same load, unlike whole runs one after
    the other on a shared machine. From scratch trains the same parameters as `full`, at its cost."""
    models = {name: prepare_model(load_classifier(pretrained), FinetuneConfig(**finetune))
              for name, finetune in METHODS.items() if finetune is not None}
    optimizers = {name: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
                  for name, model in models.items()}
    size = load_classifier(pretrained).config.encoder.image_size
    pixels, labels = torch.randn(batch_size, 3, size, size), torch.randint(0, 5, (batch_size,))
    seconds = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            model.train()
            start = time.perf_counter()
            for _ in range(steps):
                model(pixels, labels=labels).loss.backward()
                optimizers[name].step()
                optimizers[name].zero_grad()
            seconds[name].append(time.perf_counter() - start)
    speed = {name: batch_size * steps / statistics.median(times) for name, times in seconds.items()}
    return speed | {"scratch": speed["full"]}


def table_row(name: str, metrics: dict, minutes: float, step_speed: float) -> dict:
    return {"method": name, "test_accuracy": metrics["test_accuracy"],
            "trainable_parameters": metrics["trainable_parameters"],
            "images_per_s": metrics["train_samples_per_second"], "step_images_per_s": step_speed,
            "minutes": minutes}


def markdown(rows: list[dict]) -> str:
    lines = ["| method | test accuracy | trainable parameters | training images/s (run) | "
             "training images/s (step, side by side) | minutes |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {100 * r['test_accuracy']:.1f} % | {r['trainable_parameters']:,} | "
              f"{r['images_per_s']:.0f} | {r['step_images_per_s']:.0f} | {r['minutes']:.1f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 imagefolder (train/, test/)")
    parser.add_argument("--output", type=Path, default=Path("runs/transfer"))
    parser.add_argument("--pretrain-steps", type=int, default=150)
    parser.add_argument("--steps", type=int, default=50, help="steps of each adaptation run")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    start = time.perf_counter()
    classes = sorted(p.name for p in (args.data / "train").iterdir() if p.is_dir())
    source = class_subset(args.data, classes[:5], args.output / "data" / "source")
    target = class_subset(args.data, classes[5:], args.output / "data" / "target")
    pretrained = args.output / "pretrain"
    pretrain_metrics, pretrain_minutes = timed_train(base_tree(source, pretrained, args.pretrain_steps, args.batch_size))
    step_speed = step_throughput(pretrained, args.batch_size)
    rows = []
    for name, finetune in METHODS.items():
        folder = args.output / name.split(" ")[0]
        tree = adapt_tree(target, folder, args.steps, args.batch_size, pretrained, finetune)
        rows.append(table_row(name, *timed_train(tree), step_speed[name]))
    speed = {r["method"]: r["step_images_per_s"] for r in rows}
    summary = (f"pretraining on {', '.join(classes[:5])}: {args.pretrain_steps} steps, test accuracy "
               f"{100 * pretrain_metrics['test_accuracy']:.1f} %, {pretrain_minutes:.1f} min; adaptation to "
               f"{', '.join(classes[5:])}: {args.steps} steps of batch {args.batch_size} each; linear_probe / full training images/s "
               f"(step, side by side): {speed['linear_probe'] / speed['full']:.2f}x; total {(time.perf_counter() - start) / 60:.1f} min")
    text = f"{markdown(rows)}\n\n{summary}\n"
    print(text)
    (args.output / "table.md").write_text(text)
    (args.output / "results.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
