"""Inference speed: evaluation images/s on a test split, and single-image prediction latency.

Evaluation goes through `evaluation.collect_logits` (what `scripts/eval.py` runs); the cold latency
is a whole `python scripts/predict.py --checkpoint DIR IMAGE` process, start to answer; the warm
latency is `prediction.classify_images` on one image file in an already loaded process (open,
preprocess, forward).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from vit_finetune.data.config import DataConfig
from vit_finetune.data.sources import load_splits
from vit_finetune.precision import compute_device, resolve_precision

REPO_ROOT = Path(__file__).resolve().parents[1]
PREDICT_SCRIPT = REPO_ROOT / "scripts" / "predict.py"


def eval_speed(checkpoint: str | Path, data_dir: str, max_samples: int | None, batch_size: int) -> dict:
    """Images/s of evaluating `checkpoint` on the test split of `data_dir` (or its first stratified slice)."""
    from vit_finetune.evaluation import collect_logits
    from vit_finetune.loading import load_for_inference

    loaded = load_for_inference(checkpoint)
    data = DataConfig(dataset=data_dir, validation_fraction=0.0, max_train_samples=1, max_eval_samples=max_samples)
    test = load_splits(data, preprocess=loaded.preprocess).test
    outputs = collect_logits(loaded.model, test, loaded.preprocess, batch_size)
    return {"images": len(test), "batch_size": batch_size, "seconds": outputs.seconds,
            "images_per_s": len(test) / outputs.seconds, "device": outputs.device, "precision": outputs.precision}


def predict_process_latency(checkpoint: str | Path, image: str | Path, runs: int = 2) -> dict:
    """Median wall time of `python scripts/predict.py --checkpoint DIR IMAGE`, process start to answer.

    Returns `{"skipped": reason}` when scripts/predict.py does not exist.
    """
    if not PREDICT_SCRIPT.is_file():
        return {"skipped": f"{PREDICT_SCRIPT.relative_to(REPO_ROOT)} does not exist"}
    seconds, answer = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(PREDICT_SCRIPT), "--checkpoint", str(checkpoint), str(image)],
                              capture_output=True, text=True, timeout=300)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"predict.py exited with {done.returncode}: {done.stderr[-1000:]}")
        answer = done.stdout.strip()
    return {"runs": runs, "seconds": statistics.median(seconds), "all_seconds": seconds, "answer": answer}


def warm_predict_latency(checkpoint: str | Path, image: str | Path, repeats: int = 10) -> dict:
    """Median seconds per single-image prediction (open + preprocess + forward) with the model loaded."""
    from vit_finetune.loading import load_for_inference
    from vit_finetune.prediction import classify_images, open_image_file

    loaded = load_for_inference(checkpoint)
    loaded.model.to(compute_device())
    precision = resolve_precision("auto")
    classify_images(loaded, [open_image_file(image)], precision)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        classify_images(loaded, [open_image_file(image)], precision)
        seconds.append(time.perf_counter() - start)
    return {"repeats": repeats, "seconds": statistics.median(seconds), "precision": precision}
