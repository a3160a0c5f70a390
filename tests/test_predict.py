"""Prediction: equal to evaluation per image, every image mode, every bad file, pickles, the CLI."""

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_helpers import make_image_folder
from helpers_hf import make_hf_vit_checkpoint
from test_eval import CLASSES, REPO, trained  # noqa: F401  (the shared trained-model fixture)
from vit_finetune.commands.predict import main as predict_main
from vit_finetune.evaluation import collect_logits, eval_run_config, load_eval_split
from vit_finetune.loading import load_for_inference
from vit_finetune.modeling.hub import read_state_dict
from vit_finetune.prediction import predict_files

HEAVY_MODULES = ("datasets", "evaluate", "matplotlib", "transformers.trainer", "accelerate", "sklearn")


def run_predict(capsys, checkpoint, *argv) -> tuple[int, str, str]:
    """`predict --precision fp32 --checkpoint CHECKPOINT ARGV` in-process: (exit status, stdout, stderr)."""
    status = predict_main(["--precision", "fp32", "--checkpoint", str(checkpoint), *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def good_image(trained) -> Path:
    return next((trained.data_dir / "test" / "red").iterdir())


@pytest.mark.parametrize("size", [None, (40, 48)], ids=["native-size", "resized"])
def test_predict_equals_eval_per_image(trained, tmp_path, size):
    loaded = load_for_inference(trained.output_dir)
    overrides = [f"data.cache_dir={tmp_path / 'cache'}"]
    if size is not None:  # a data set at another size: resized per batch by the collator, per image by predict
        other = make_image_folder(tmp_path / "data", classes=CLASSES, per_class=4, size=size)
        overrides.append(f"data.dataset={other}")
    split = load_eval_split(loaded, eval_run_config(loaded, overrides=overrides))
    evaluated = collect_logits(loaded.model, split, loaded.preprocess, batch_size=5, precision="fp32")
    predicted = predict_files(loaded, split.sources, precision="fp32", batch_size=3)
    assert not predicted.errors and [p.path for p in predicted.predictions] == split.sources
    logits = torch.tensor([p.logits for p in predicted.predictions])
    assert (logits - torch.from_numpy(evaluated.logits)).abs().max() <= 1e-5


def test_text_and_json_output(trained, capsys, good_image):
    second = next((trained.data_dir / "test" / "blue").iterdir())
    status, out, _ = run_predict(capsys, trained.output_dir, good_image, second)
    assert status == 0 and [line.split(": ")[0] for line in out.splitlines()] == [str(good_image), str(second)]
    assert out.splitlines()[0].startswith(f"{good_image}: red (0.")
    status, out, _ = run_predict(capsys, trained.output_dir, good_image, "--json", "--top-k", 3)
    [entry] = json.loads(out)
    assert set(entry) == {"path", "label", "score", "top_k"} and entry["path"] == str(good_image)
    assert [k["label"] for k in entry["top_k"]][0] == entry["label"] and len(entry["top_k"]) == 3
    scores = [k["score"] for k in entry["top_k"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == entry["score"]
    status, out, _ = run_predict(capsys, trained.output_dir, good_image, "--json", "--top-k", 10)
    assert sum(k["score"] for k in json.loads(out)[0]["top_k"]) == pytest.approx(1.0, abs=1e-5)  # capped at 4 classes


def write_every_kind_of_image(folder: Path) -> list[Path]:
    """The same picture in every format and mode a user may have, plus odd sizes."""
    folder.mkdir()
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8))
    saves = {
        "rgb.jpg": (rgb, {}), "rgb.webp": (rgb, {}), "rgb.bmp": (rgb, {}), "rgb.tiff": (rgb, {}),
        "gray.png": (rgb.convert("L"), {}), "bilevel.png": (rgb.convert("1"), {}),
        "palette.gif": (rgb.convert("P"), {}), "palette.png": (rgb.convert("P"), {"transparency": 0}),
        "rgba.png": (rgb.convert("RGBA"), {}), "la.png": (rgb.convert("LA"), {}),
        "cmyk.jpg": (rgb.convert("CMYK"), {}), "cmyk.tiff": (rgb.convert("CMYK"), {}),
        "sixteen.png": (Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)), {}),
        "tiny.png": (rgb.resize((3, 2)), {}), "tall.png": (rgb.resize((7, 300)), {}),
        "large.jpg": (rgb.resize((1200, 900)), {}),
    }
    for name, (image, options) in saves.items():
        image.save(folder / name, **options)
    return [folder / name for name in saves]


def test_every_format_mode_and_size_is_predicted(trained, capsys, tmp_path):
    paths = write_every_kind_of_image(tmp_path / "images")
    status, out, err = run_predict(capsys, trained.output_dir, *paths, "--json")
    assert status == 0, err
    assert [entry["path"] for entry in json.loads(out)] == [str(p) for p in paths]
    assert all(entry["label"] in CLASSES for entry in json.loads(out))


def test_exif_rotation_is_applied(trained, tmp_path):
    upright = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8))
    upright.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.png", exif=exif)
    run = predict_files(load_for_inference(trained.output_dir), [tmp_path / "upright.png", tmp_path / "rotated.png"])
    assert run.predictions[0].logits == pytest.approx(run.predictions[1].logits, abs=1e-6)


def test_sixteen_bit_equals_its_eight_bit_version(trained, tmp_path):
    values = np.random.default_rng(2).integers(0, 256, (32, 32)).astype(np.uint16)
    Image.fromarray(values * 257).save(tmp_path / "deep.png")
    Image.fromarray(values.astype(np.uint8)).save(tmp_path / "flat.png")
    run = predict_files(load_for_inference(trained.output_dir), [tmp_path / "deep.png", tmp_path / "flat.png"])
    assert run.predictions[0].logits == pytest.approx(run.predictions[1].logits, abs=1e-6)


def png_bomb(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A tiny PNG whose header declares `width` x `height` pixels (far above PIL's bomb limit)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])  # width, height, then depth/colour/... as saved
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


def write_bad_files(folder: Path) -> dict[str, Path]:
    """One file of each broken kind, by the reason it should be refused with."""
    folder.mkdir()
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, format="JPEG")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file, renamed\n")
    (folder / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "a_folder.png").mkdir()
    return {"file not found": folder / "missing.png", "is a directory": folder / "a_folder.png",
            "empty file": folder / "empty.jpg", "not an image": folder / "notes.jpg",
            "corrupt or truncated": folder / "cut.jpg", "decompression bomb": png_bomb(folder / "bomb.png")}


def test_bad_files_give_one_line_each_and_the_rest_is_predicted(trained, capsys, tmp_path, good_image):
    bad = write_bad_files(tmp_path / "bad")
    paths = list(bad.values())
    status, out, err = run_predict(capsys, trained.output_dir, paths[0], good_image, *paths[1:], good_image, "--json")
    assert status == 2
    assert [entry["path"] for entry in json.loads(out)] == [str(good_image)] * 2
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for (reason, path), line in zip(bad.items(), errors):
        assert line.startswith(f"error: {path}: ") and reason in line, line


@pytest.mark.parametrize("reason", ["file not found", "not an image", "decompression bomb"])
def test_a_single_bad_file_fails_the_call(trained, capsys, tmp_path, reason):
    status, out, err = run_predict(capsys, trained.output_dir, write_bad_files(tmp_path / "bad")[reason])
    assert status == 2 and out.strip() == "" and reason in err


class CreatesMarker:
    """Unpickling this would call open(marker, "w"): code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import builtins

        return builtins.open, (self.marker, "w")


def test_pickled_weights_load_only_when_weights_only(capsys, tmp_path):
    folder = make_hf_vit_checkpoint(tmp_path / "ckpt", id2label=dict(enumerate(CLASSES)))
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    reference = predict_files(load_for_inference(folder), [image]).predictions[0].logits
    state = read_state_dict(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")  # plain tensors: loads with weights_only=True
    status, out, _ = run_predict(capsys, folder, image, "--json", "--top-k", 4)
    assert status == 0
    [prediction] = predict_files(load_for_inference(folder), [image]).predictions
    assert prediction.logits == pytest.approx(reference, abs=1e-6)
    marker = tmp_path / "pwned"
    torch.save(state | {"classifier.weight": CreatesMarker(marker)}, folder / "pytorch_model.bin")
    status, out, err = run_predict(capsys, folder, image)
    assert status == 2 and "pytorch_model.bin: refused" in err and not marker.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on CUDA")
def test_fp16_without_cuda_is_a_one_line_error(trained, capsys, good_image):
    status = predict_main(["--precision", "fp16", "--checkpoint", str(trained.output_dir), str(good_image)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err[-1].startswith("error: --precision fp16: ") and "CUDA" in err[-1]


def test_script_end_to_end_without_heavy_imports(trained, good_image):
    code = ("import json, sys; from vit_finetune.commands.predict import main; status = main(sys.argv[1:]); "
            f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]), file=sys.stderr); sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, "--checkpoint", str(trained.output_dir), str(good_image)],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{good_image}: red")
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("command", [[sys.executable, str(REPO / "scripts" / "predict.py")],
                                     ["vit-finetune", "predict"]])
def test_help(command):
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--checkpoint" in result.stdout and "--top-k" in result.stdout
