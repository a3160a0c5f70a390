"""Predict the class of image files with a trained model (any common format, mode or size).

    loaded = load_for_inference("runs/cifar10")
    run = predict_files(loaded, ["cat.jpg", "dog.png"], top_k=3)
    for prediction in run.predictions: print(prediction.path, prediction.label, prediction.score)

A single-label model gives a `Prediction` per image (softmax scores); a multi-label model
(`problem_type: multi_label_classification`) a `MultiLabelPrediction`: every label's sigmoid score
and the labels at or above `threshold`.

Each file is opened with `data.images.open_image` (format allow-list, decompression-bomb check,
eager decode, EXIF rotation, any mode -> RGB) and preprocessed with `data.preprocess.preprocess_images`,
the same numbers the evaluation / training path gives an image of the data set. Memory stays bounded on
huge images: one over `LARGE_IMAGE_PIXELS` (16.8 MP) is decoded at a reduced size, no smaller than twice
the model's resize (its numbers then differ slightly from a full-size decode), and a batch holds at most
`MAX_BATCH_PIXELS` decoded pixels. A file that cannot
be read becomes an `ImageFileError` (file + reason) in `PredictionRun.errors`; the other files are
still predicted. Imports stay light: no `datasets`, Trainer, `evaluate` or matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from PIL import Image

from vit_finetune.data.images import LARGE_IMAGE_PIXELS, ImageFileError, open_image
from vit_finetune.data.preprocess import PreprocessConfig, preprocess_images
from vit_finetune.loading import LoadedModel, forward_logits
from vit_finetune.multi_label import DEFAULT_THRESHOLD
from vit_finetune.precision import compute_device, resolve_precision

DEFAULT_BATCH_SIZE = 32
MAX_BATCH_PIXELS = LARGE_IMAGE_PIXELS  # decoded pixels one batch holds (uint8; the float copies are per image)


@dataclass
class Prediction:
    """The top class of one image, its softmax score, the `top_k` best classes and the raw logits."""

    path: str
    label: str
    score: float
    top_k: list[tuple[str, float]]
    logits: list[float]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: path, label, score, top_k as [{"label", "score"}, ...] (no logits)."""
        return {"path": self.path, "label": self.label, "score": self.score,
                "top_k": [{"label": label, "score": score} for label, score in self.top_k]}

    def __str__(self) -> str:
        return f"{self.path}: {self.label} ({self.score:.4f})"


@dataclass
class MultiLabelPrediction:
    """The labels of one image whose sigmoid score is at or above `threshold`, and every label's score."""

    path: str
    labels: list[tuple[str, float]]  # at or above the threshold, highest score first
    scores: dict[str, float]  # every label, in label-id order
    threshold: float
    logits: list[float]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: path, threshold, labels as [{"label", "score"}, ...], scores of all labels (no logits)."""
        return {"path": self.path, "threshold": self.threshold,
                "labels": [{"label": label, "score": score} for label, score in self.labels], "scores": self.scores}

    def __str__(self) -> str:
        found = ", ".join(f"{label} ({score:.4f})" for label, score in self.labels)
        return f"{self.path}: {found or f'no label scores {self.threshold:g} or more'}"


@dataclass
class PredictionRun:
    """Predictions for the readable files (in input order) and one error per unreadable file."""

    predictions: list[Prediction | MultiLabelPrediction] = field(default_factory=list)
    errors: list[ImageFileError] = field(default_factory=list)


def predict_files(
    loaded: LoadedModel,
    paths: Sequence[str | Path],
    top_k: int = 5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str = "auto",
    threshold: float = DEFAULT_THRESHOLD,
) -> PredictionRun:
    """Classify image files in batches; unreadable files are reported, not fatal. `threshold`: multi-label only."""
    loaded.model.to(compute_device())
    precision = resolve_precision(precision, "--precision")
    run = PredictionRun()
    for opened in image_batches(paths, batch_size, loaded.preprocess, run.errors):
        logits = classify_images(loaded, [image for _, image in opened], precision)  # (B, num_labels)
        if loaded.model.config.multi_label:
            run.predictions += [make_multi_label_prediction(path, row, loaded.label_names, threshold)
                                for (path, _), row in zip(opened, logits)]
        else:
            run.predictions += [make_prediction(path, row, loaded.label_names, top_k)
                                for (path, _), row in zip(opened, logits)]
    return run


def image_batches(paths: Sequence[str | Path], batch_size: int, preprocess: PreprocessConfig,
                  errors: list[ImageFileError]) -> Iterator[list[tuple[str, Image.Image]]]:
    """(path, RGB image) of the readable files in order, opened one at a time into batches of at most `batch_size`
    images and `MAX_BATCH_PIXELS` decoded pixels (a larger image alone); an `ImageFileError` for each other file
    goes to `errors`. Images over `LARGE_IMAGE_PIXELS` are decoded at a reduced size (`open_image`)."""
    batch, pixels = [], 0
    for path in paths:
        try:
            image = open_image_file(path, preprocess)
        except ImageFileError as err:
            errors.append(err)
            continue
        if batch and (len(batch) == batch_size or pixels + image.width * image.height > MAX_BATCH_PIXELS):
            yield batch
            batch, pixels = [], 0
        batch.append((str(path), image))
        pixels += image.width * image.height
    if batch:
        yield batch


def open_image_file(path: str | Path, preprocess: PreprocessConfig | None = None) -> Image.Image:
    """`open_image` with plain reasons for a directory or an empty file; a large image is decoded at a reduced
    size when `preprocess` resizes it (see `open_image`)."""
    path = Path(path)
    if path.is_dir():
        raise ImageFileError(str(path), "is a directory, not an image file")
    if path.is_file() and path.stat().st_size == 0:
        raise ImageFileError(str(path), "empty file (0 bytes)")
    return open_image(path, reduce_for=preprocess.resized_size if preprocess and preprocess.do_resize else None)


def classify_images(loaded: LoadedModel, images: list[Image.Image], precision: str = "fp32") -> torch.Tensor:
    """float32 logits (B, num_labels) on the CPU for RGB PIL images of any sizes (`precision` resolved)."""
    pixel_values = preprocess_images(images, loaded.preprocess)  # (B, 3, h, w)
    return forward_logits(loaded.model, pixel_values, precision).cpu()


def make_prediction(path: str, logits: torch.Tensor, label_names: list[str], top_k: int) -> Prediction:
    """The `Prediction` for one row of logits (num_labels,)."""
    scores = logits.softmax(dim=-1)
    top = torch.topk(scores, k=min(top_k, len(label_names)))
    best = [(label_names[int(index)], float(score)) for score, index in zip(top.values, top.indices)]
    return Prediction(path=path, label=best[0][0], score=best[0][1], top_k=best, logits=logits.tolist())


def make_multi_label_prediction(path: str, logits: torch.Tensor, label_names: list[str],
                                threshold: float) -> MultiLabelPrediction:
    """The `MultiLabelPrediction` of one row of logits (num_labels,): sigmoid scores, the labels at or above
    `threshold`."""
    scores = dict(zip(label_names, logits.sigmoid().tolist()))
    found = sorted(((label, score) for label, score in scores.items() if score >= threshold), key=lambda item: -item[1])
    return MultiLabelPrediction(path=path, labels=found, scores=scores, threshold=threshold, logits=logits.tolist())
