"""A generated multi-label image set: coloured shapes, one to three per image, as an imagefolder with
`metadata.jsonl` (the `datasets` convention: `{"file_name": "0003.png", "labels": ["red square", ...]}`).

Each label is one shape in its own colour, drawn in a distinct quadrant (no occlusion) at a jittered
position and size on a noisy grey background: which labels an image holds is visible, and which
quadrant holds them carries no information.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = {"blue triangle": (40, 70, 230), "green circle": (30, 190, 60), "red square": (225, 35, 35),
          "yellow cross": (235, 215, 30)}  # label -> colour; names sorted, as the labels module orders them


def draw_shape(draw: ImageDraw.ImageDraw, label: str, box: tuple[int, int, int, int]) -> None:
    """Draw `label`'s shape inside box (left, top, right, bottom)."""
    left, top, right, bottom = box
    colour, kind = SHAPES[label], label.split()[1]
    if kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "triangle":
        draw.polygon([((left + right) // 2, top), (right, bottom), (left, bottom)], fill=colour)
    else:  # cross
        middle_x, middle_y, arm = (left + right) // 2, (top + bottom) // 2, max((right - left) // 6, 1)
        draw.rectangle((middle_x - arm, top, middle_x + arm, bottom), fill=colour)
        draw.rectangle((left, middle_y - arm, right, middle_y + arm), fill=colour)


def make_shapes_image(labels: list[str], size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image holding each of `labels` (at most 4) in its own random quadrant."""
    pixels = np.clip(rng.normal(128.0, 20.0, size=(size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    draw, half = ImageDraw.Draw(image), size // 2
    for label, quadrant in zip(labels, rng.permutation(4)):
        side = int(rng.integers(half * 5 // 8, half - 1))
        left = (quadrant % 2) * half + int(rng.integers(0, half - side))
        top = (quadrant // 2) * half + int(rng.integers(0, half - side))
        draw_shape(draw, label, (left, top, left + side, top + side))
    return image


def random_labels(rng: np.random.Generator, most: int = 3) -> list[str]:
    """One to `most` distinct labels, uniformly many, in a random choice."""
    count = int(rng.integers(1, most + 1))
    return sorted(rng.choice(sorted(SHAPES), size=count, replace=False).tolist())


def make_shapes_folder(root: str | Path, counts: dict[str, int], size: int = 32, seed: int = 0) -> Path:
    """`<root>/<split>/<i>.png` + `<root>/<split>/metadata.jsonl` for each split in `counts`; returns `root`."""
    root, rng = Path(root), np.random.default_rng(seed)
    for split, count in counts.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        records = []
        for index in range(count):
            labels = random_labels(rng)
            make_shapes_image(labels, size, rng).save(folder / f"{index:04d}.png")
            records.append({"file_name": f"{index:04d}.png", "labels": labels})
        (folder / "metadata.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return root
