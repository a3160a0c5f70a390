"""Untrusted files: pickles load only with weights_only=True (model weights and the Trainer's resume
state), even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1; damaged weight files and hostile images are
refused with an error naming the file."""

import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from vit_finetune.commands import EXIT_USER_ERROR
from vit_finetune.modeling import CheckpointError, ClassifierConfig, build_classifier, encoder_config_for_size, \
    load_classifier, save_classifier
from vit_finetune.data.images import ImageFileError, open_image
from vit_finetune.training.checkpoints import ResumeError

from .helpers import STEPS_PER_EPOCH, CreatesMarker, copy_checkpoint, message_line, run_tree, train_cli, train_tree

PACKAGE = Path(__file__).resolve().parents[2] / "vit_finetune"


# ---- resume state (optimizer.pt, scheduler.pt, rng_state.pth) -------------------------------------------------

@pytest.mark.parametrize("name, force_unsafe_env", [("optimizer.pt", False), ("optimizer.pt", True),
                                                     ("scheduler.pt", True), ("rng_state.pth", True),
                                                     ("scaler.pt", True)])
def test_crafted_resume_pickle_is_refused_and_never_runs(reference, data_dir, tmp_path, monkeypatch, name,
                                                         force_unsafe_env):
    if force_unsafe_env:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    output_dir = tmp_path / "run"
    checkpoint = copy_checkpoint(reference / f"checkpoint-{STEPS_PER_EPOCH}", output_dir)
    marker = tmp_path / "pwned"
    torch.save({"state": CreatesMarker(marker), "param_groups": []}, checkpoint / name)
    with pytest.raises(ResumeError, match=rf"{re.escape(str(checkpoint))}: refused to load .*{re.escape(name[:5])}"):
        train_tree(run_tree(data_dir, output_dir, resume_from_checkpoint=True))
    assert not marker.exists()


def test_crafted_resume_pickle_exits_2_from_the_command_line(reference, data_dir, tmp_path, capsys):
    output_dir = tmp_path / "run"
    checkpoint = copy_checkpoint(reference / f"checkpoint-{STEPS_PER_EPOCH}", output_dir)
    marker = tmp_path / "pwned"
    torch.save({"state": CreatesMarker(marker)}, checkpoint / "optimizer.pt")
    status = train_cli(run_tree(data_dir, output_dir, resume_from_checkpoint=str(checkpoint)), tmp_path / "c.yaml")
    assert status == EXIT_USER_ERROR and not marker.exists()
    assert message_line(capsys.readouterr().err).startswith(f"error: {checkpoint}: refused to load optimizer.pt")


# ---- model weights ---------------------------------------------------------------------------------------------

def tiny_model_folder(folder: Path, num_labels: int = 3) -> Path:
    encoder = encoder_config_for_size("tiny", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, image_size=32, patch_size=8)
    labels = {i: f"c{i}" for i in range(num_labels)}
    return save_classifier(build_classifier(ClassifierConfig(encoder=encoder, pooling="cls", num_labels=num_labels,
                                                             id2label=labels)), folder)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _wrong_shape(path: Path) -> None:  # a valid file from a model with 5 classes instead of 3
    donor = tiny_model_folder(path.parent.parent / "donor", num_labels=5)
    path.write_bytes((donor / "model.safetensors").read_bytes())


UNREADABLE = "cannot read safetensors file"
DAMAGE = {
    "truncated": (_truncate, UNREADABLE),
    "zero bytes": (lambda path: path.write_bytes(b""), UNREADABLE),
    "random bytes": (lambda path: path.write_bytes(np.random.default_rng(0).bytes(4096)), UNREADABLE),
    "huge header length": (lambda path: path.write_bytes(struct.pack("<Q", 2**62) + b"{}"), UNREADABLE),
    "wrong shape": (_wrong_shape, "mis-shaped"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_model_file_is_refused_naming_it(tmp_path, damage):
    folder = tiny_model_folder(tmp_path / "model" / "m")
    spoil, fragment = DAMAGE[damage]
    spoil(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(folder / 'model.safetensors'))}: .*{fragment}"):
        load_classifier(folder)


def test_damaged_checkpoint_model_is_refused_on_resume(reference, data_dir, tmp_path):
    output_dir = tmp_path / "run"
    checkpoint = copy_checkpoint(reference / f"checkpoint-{STEPS_PER_EPOCH}", output_dir)
    _truncate(checkpoint / "model.safetensors")
    with pytest.raises(CheckpointError, match=re.escape(str(checkpoint / "model.safetensors"))):
        train_tree(run_tree(data_dir, output_dir, resume_from_checkpoint=True))


# ---- images ----------------------------------------------------------------------------------------------------

def minimal_psd(path: Path) -> Path:
    """A valid 4x4 RGB Photoshop file (PIL opens it when no allow-list is given)."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 4, 4, 8, 3)
    path.write_bytes(header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + bytes(3 * 4 * 4))
    return path


def saved_as(fmt: str):
    def write(path: Path) -> Path:
        Image.new("RGB", (16, 16), (200, 10, 10)).save(path, format=fmt)
        return path
    return write


def truncated_jpeg(path: Path) -> Path:
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(data, "JPEG")
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    return path


def bomb(path: Path) -> Path:
    """A ~12 kB PNG declaring 10000 x 10000 pixels, above the 89.5 M pixel limit."""
    Image.new("1", (10_000, 10_000)).save(path)
    return path


BAD_IMAGES = {
    "eps renamed .png": (saved_as("EPS"), "not an image in an allowed format"),
    "pdf renamed .png": (saved_as("PDF"), "not an image in an allowed format"),
    "psd renamed .png": (minimal_psd, "not an image in an allowed format"),
    "truncated jpeg": (truncated_jpeg, "corrupt or truncated"),
    "zero bytes": (lambda path: path.write_bytes(b""), "not an image in an allowed format"),
    "random bytes": (lambda path: path.write_bytes(np.random.default_rng(1).bytes(1000)),
                     "not an image in an allowed format"),
    "decompression bomb": (bomb, "decompression bomb refused"),
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL warns; we refuse
@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_image_is_refused_before_decoding_naming_the_file(tmp_path, monkeypatch, case):
    make, reason = BAD_IMAGES[case]
    path = tmp_path / "picture.png"
    make(path)
    decoded = []
    if case != "truncated jpeg":  # the others must be refused before any pixel is decoded
        monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(ImageFileError, match=rf"^{re.escape(str(path))}: {reason}"):
        open_image(path)
    assert decoded == []


def test_the_psd_file_is_a_real_psd(tmp_path):
    """Guard for the table above: without the allow-list PIL does open the crafted file as PSD."""
    with Image.open(minimal_psd(tmp_path / "x.png")) as image:
        assert image.format == "PSD" and image.size == (4, 4)


def test_load_truncated_images_is_never_switched_on(tmp_path):
    import vit_finetune.evaluation  # noqa: F401  (everything that opens images)
    import vit_finetune.prediction  # noqa: F401
    import vit_finetune.training.run  # noqa: F401

    with pytest.raises(ImageFileError):
        open_image(truncated_jpeg(tmp_path / "cut.jpg"))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    setters = [str(path) for path in PACKAGE.rglob("*.py") if "LOAD_TRUNCATED_IMAGES" in path.read_text()
               and re.search(r"LOAD_TRUNCATED_IMAGES\s*=(?!=)", path.read_text())]
    assert setters == []
