"""open_image / to_rgb: every PIL mode to RGB, and refusal of unsafe or broken files."""

import io

import numpy as np
import pytest
from PIL import Image

from vit_finetune.data.images import ImageFileError, open_image, to_rgb


def _save(image: Image.Image, path, fmt: str = "PNG", **kwargs):
    image.save(path, format=fmt, **kwargs)
    return path


def test_rgb_roundtrip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    image = open_image(_save(Image.fromarray(array), tmp_path / "a.png"))
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), array)


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "YCbCr"])
def test_plain_modes_become_rgb(tmp_path, mode):
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    image = Image.new("RGB", (6, 5), (10, 200, 30)).convert(mode)
    if mode == "YCbCr":
        fmt = "JPEG"
    result = open_image(_save(image, tmp_path / f"a.{fmt.lower()}", fmt))
    assert result.mode == "RGB" and result.size == (6, 5)


def test_rgba_and_la_composite_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert np.asarray(open_image(_save(rgba, tmp_path / "a.png")))[0, 0].tolist() == [255, 255, 255]
    la = Image.new("LA", (4, 4), (0, 128))  # black, half transparent
    assert np.asarray(open_image(_save(la, tmp_path / "b.png")))[0, 0].tolist() == [127] * 3


def test_palette_with_transparency(tmp_path):
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    _save(palette, tmp_path / "p.png", transparency=1)  # colour 1 (red) is transparent
    assert np.asarray(open_image(tmp_path / "p.png"))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(open_image(_save(palette, tmp_path / "q.gif", "GIF")))[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I", "<i4")])
def test_16_bit_scaled_not_saturated(mode, dtype):
    values = np.array([[0, 257 * 100, 65535]]).astype(dtype)
    image = Image.frombytes(mode, (3, 1), values.tobytes())
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 100, 255]


def test_16_bit_png_file(tmp_path):
    values = np.full((4, 4), 257 * 60, dtype=np.uint16)
    result = open_image(_save(Image.fromarray(values), tmp_path / "a.png"))
    assert np.asarray(result)[0, 0].tolist() == [60, 60, 60]


def test_float_images():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 100, 255]


def test_exif_orientation_applied(tmp_path):
    image = Image.new("RGB", (6, 3), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    _save(image, tmp_path / "a.jpg", "JPEG", exif=exif.tobytes())
    assert open_image(tmp_path / "a.jpg").size == (3, 6)


def test_bytes_source_named():
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG")
    assert open_image(buffer.getvalue(), name="train[3]").size == (2, 2)
    with pytest.raises(ImageFileError, match=r"^train\[4\]: "):
        open_image(b"not an image", name="train[4]")


def test_truncated_file_refused(tmp_path):
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(data, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ImageFileError, match="cut.jpg: corrupt or truncated"):
        open_image(path)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = _save(Image.new("L", (200, 200)), tmp_path / "bomb.png")
    with pytest.raises(ImageFileError, match="bomb.png: decompression bomb"):
        open_image(path, max_pixels=100 * 100)


def test_pil_bomb_error_is_converted(tmp_path, monkeypatch):
    path = _save(Image.new("L", (200, 200)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL itself raises above 2x this
    with pytest.raises(ImageFileError, match="decompression bomb"):
        open_image(path)


@pytest.mark.parametrize("fmt", ["EPS", "PDF", "ICO"])
def test_formats_outside_allow_list_refused(tmp_path, fmt):
    path = tmp_path / "disguised.png"
    Image.new("RGB", (16, 16)).save(path, format=fmt)
    with pytest.raises(ImageFileError, match=r"disguised.png: not an image in an allowed format"):
        open_image(path)


def test_error_is_value_error_one_line(tmp_path):
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(ValueError) as info:
        open_image(tmp_path / "x.png")
    assert "\n" not in str(info.value) and str(tmp_path / "x.png") in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageFileError, match="file not found"):
        open_image(tmp_path / "nope.png")
