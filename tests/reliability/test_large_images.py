"""Predict on images just under the decompression-bomb limit (9450 x 9450 px, 1 MB files): memory stays bounded,
and batches are bounded by decoded pixels. Each run is a fresh process that reports its own peak RSS before and
after predicting 4 such images in one batch; a full-size decode of those held 4 x 268 MB of pixels plus a 1 GB
float copy of each."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vit_finetune.data.images import LARGE_IMAGE_PIXELS, MAX_IMAGE_PIXELS
from vit_finetune.data.preprocess import PreprocessConfig
from vit_finetune.prediction import MAX_BATCH_PIXELS, image_batches

from .helpers import command_env

SIDE = 9450
COLOUR = (200, 30, 30)
assert LARGE_IMAGE_PIXELS < SIDE * SIDE < MAX_IMAGE_PIXELS

PREDICT_AND_MEASURE = """
import json, resource, sys
from vit_finetune.loading import load_for_inference
from vit_finetune.prediction import predict_files
loaded = load_for_inference(sys.argv[1])
small = predict_files(loaded, [sys.argv[2]], precision="fp32")  # warm-up, and the small image's logits
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
large = predict_files(loaded, sys.argv[3:], batch_size=4, precision="fp32")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grown_mb": (after - before) / 1024, "small": small.predictions[0].logits,
                  "large": [p.logits for p in large.predictions], "errors": [str(e) for e in large.errors]}))
"""


@pytest.fixture(scope="module")
def solid_images(tmp_path_factory) -> dict[str, Path]:
    """One colour at 9450 x 9450 as PNG and JPEG, and at 64 x 64 as PNG."""
    folder = tmp_path_factory.mktemp("large")
    large = Image.new("RGB", (SIDE, SIDE), COLOUR)
    large.save(folder / "large.png", compress_level=1)
    large.save(folder / "large.jpg", quality=95)
    Image.new("RGB", (64, 64), COLOUR).save(folder / "small.png")
    return {"png": folder / "large.png", "jpeg": folder / "large.jpg", "small": folder / "small.png"}


# format -> growth of the peak RSS allowed (measured: 134 MB and 0 MB; 2220 MB for the PNGs decoded at full size):
# a PNG is decoded at full size (268 MB of RGB) and reduced at once, one image at a time; a JPEG at 1/8 (4 MB)
BOUNDS_MB = {"png": 350, "jpeg": 100}


@pytest.mark.parametrize("kind", BOUNDS_MB)
def test_predicting_four_huge_images_keeps_memory_bounded(reference, solid_images, kind):
    argv = [sys.executable, "-c", PREDICT_AND_MEASURE, str(reference), str(solid_images["small"]),
            *[str(solid_images[kind])] * 4]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=command_env())
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["errors"] == [] and len(measured["large"]) == 4
    assert measured["grown_mb"] < BOUNDS_MB[kind], measured["grown_mb"]
    for logits in measured["large"]:  # one colour at any size: the same input after the resize
        assert logits == pytest.approx(measured["small"], abs=0.05)


def test_batches_are_bounded_by_decoded_pixels_as_well_as_count(tmp_path):
    """Two 9 MP images (not reduced: under LARGE_IMAGE_PIXELS) never share a batch; small ones fill it to its count."""
    side = 3000
    assert 2 * side * side > MAX_BATCH_PIXELS and side * side < LARGE_IMAGE_PIXELS
    Image.new("RGB", (side, side), COLOUR).save(tmp_path / "big.png", compress_level=1)
    Image.new("RGB", (32, 32), COLOUR).save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    names = ["small.png", "big.png", "big.png", "broken.png"] + ["small.png"] * 4
    errors = []
    batches = list(image_batches([tmp_path / name for name in names], 4, PreprocessConfig(height=32, width=32), errors))
    assert [[image.size[0] for _, image in batch] for batch in batches] == [[32, side], [side, 32, 32, 32], [32]]
    assert [err.name for err in errors] == [str(tmp_path / "broken.png")]
