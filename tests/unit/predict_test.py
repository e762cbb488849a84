"""Images read for classification as what they are: bit depth, transparency, dtype and range
(mlp_jax/predict.py's `_intensity`). Each row writes one image two ways that mean the same
picture, or one that cannot mean a Fashion-MNIST image, and reads them back."""

import warnings

import numpy as np
import pytest
from PIL import Image

from mlp_jax import predict
from mlp_jax.errors import UserError

# A 28x28 picture with every gray level, as Fashion-MNIST stores one (bright on black).
GRAY = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)


def _read(path) -> np.ndarray:
    images = predict.read_images([str(path)])
    assert not images.errors, images.errors
    return images.pixels


def _save(array, path, mode=None, **kwargs):
    Image.fromarray(array, mode=mode).save(path, **kwargs)
    return path


def _reference(tmp_path) -> np.ndarray:
    return _read(_save(GRAY, tmp_path / "gray8.png"))


def test_an_8_bit_png_is_read_as_it_is(tmp_path):
    assert np.array_equal(_reference(tmp_path).reshape(28, 28), GRAY)


def test_a_16_bit_png_is_scaled_by_its_own_range(tmp_path):
    deep = GRAY.astype(np.uint16) * 257  # The same levels, at 16 bits.
    assert np.array_equal(_read(_save(deep, tmp_path / "gray16.png")), _reference(tmp_path))


def test_a_16_bit_png_with_a_transparent_gray_level_reads_it_as_background(tmp_path):
    deep = GRAY.astype(np.uint16) * 257
    deep[GRAY == 0] = 1234  # The background in a gray the PNG declares transparent (tRNS).
    Image.fromarray(deep).save(tmp_path / "trns.png", transparency=1234)
    assert np.array_equal(_read(tmp_path / "trns.png"), _reference(tmp_path))


def test_a_transparent_background_is_the_datasets_black(tmp_path):
    # A white sheet under the transparent pixels: a viewer shows only the opaque picture.
    rgba = np.full((28, 28, 4), 255, np.uint8)
    rgba[..., :3] = GRAY[..., None]
    rgba[..., 3] = np.where(GRAY > 0, 255, 0)
    rgba[GRAY == 0, :3] = 255
    assert np.array_equal(_read(_save(rgba, tmp_path / "rgba.png")), _reference(tmp_path))


def test_a_gray_image_with_alpha_is_read_with_its_alpha(tmp_path):
    la = np.stack([np.full((28, 28), 255, np.uint8), GRAY], axis=-1)  # White, GRAY opaque.
    assert np.array_equal(_read(_save(la, tmp_path / "la.png", mode="LA")), _reference(tmp_path))


def test_a_palette_image_with_a_transparent_colour_is_read_with_it(tmp_path):
    picture = np.where(GRAY > 127, 200, 7).astype(np.uint8)
    image = Image.fromarray(picture).convert("P")
    transparent = image.getpixel((0, 0))  # GRAY[0, 0] is 0: that colour is see-through.
    image.save(tmp_path / "palette.png", transparency=transparent)
    expected = np.where(GRAY > 127, 200, 0).astype(np.uint8).reshape(1, 784)
    assert np.array_equal(_read(tmp_path / "palette.png"), expected)


def test_half_transparency_is_half_the_level(tmp_path):
    la = np.stack([np.full((28, 28), 200, np.uint8), np.full((28, 28), 128, np.uint8)], -1)
    assert np.all(_read(_save(la, tmp_path / "half.png", mode="LA")) == round(200 * 128 / 255))


def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path):
    # As a phone stores a photo taken upright: its pixels turned, and EXIF tag 274 (value 6)
    # saying to turn them back a quarter clockwise. Read as stored, a trouser was a bag.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(GRAY)).save(tmp_path / "photo.png", exif=exif)
    assert np.array_equal(_read(tmp_path / "photo.png"), _reference(tmp_path))


def test_a_batch_named_in_capitals_is_read_as_a_batch(tmp_path):
    np.save(tmp_path / "u8.npy", GRAY[None])
    (tmp_path / "u8.npy").rename(tmp_path / "BATCH.NPY")  # Was read as an image, refused.
    images = predict.read_images([str(tmp_path / "BATCH.NPY")])
    assert images.names == [f"{tmp_path / 'BATCH.NPY'}[0]"]
    assert np.array_equal(images.pixels, _reference(tmp_path))


def test_a_large_photo_is_read_and_one_past_pils_limit_says_to_resize_it(tmp_path, monkeypatch):
    # PIL's limit lowered to 261 pixels (it warns past it, refuses past twice it), so that
    # these images stand for photos of 100 and 200 megapixels: the first warned twice, the
    # second's line gave no fix.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 261)
    _save(GRAY[:, :14], tmp_path / "large.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _read(tmp_path / "large.png").shape == (1, 784)
    (error,) = predict.read_images([str(_save(GRAY, tmp_path / "huge.png"))]).errors
    assert error.endswith("exceeds limit of 522 pixels; resize it first)"), error


def test_floats_in_0_1_are_the_uint8_levels(tmp_path):
    np.save(tmp_path / "u8.npy", GRAY[None])
    np.save(tmp_path / "f32.npy", (GRAY[None] / 255).astype(np.float32))
    assert np.array_equal(_read(tmp_path / "f32.npy"), _read(tmp_path / "u8.npy"))


@pytest.mark.parametrize(
    "name, write, reason",
    [
        ("f255.npy", lambda p: np.save(p, GRAY[None].astype(np.float32)), "floats in [0, 1]"),
        ("u16.npy", lambda p: np.save(p, GRAY[None].astype(np.uint16)), "uint16 values"),
        (
            "f.tiff",
            lambda p: Image.fromarray(GRAY.astype(np.float32) * 3, mode="F").save(p),
            "floating-point pixels outside [0, 1]",
        ),
        ("text.png", lambda p: p.write_text("not an image"), "not an image PIL can read"),
    ],
)
def test_what_is_not_an_image_of_pixels_is_one_line_naming_it(tmp_path, name, write, reason):
    write(tmp_path / name)
    images = predict.read_images([str(tmp_path / name)])
    assert images.names == [] and len(images.errors) == 1
    assert images.errors[0].startswith(str(tmp_path / name)) and reason in images.errors[0]


def test_one_path_where_a_list_is_needed_is_refused_and_a_path_object_is_read(tmp_path):
    # A string was read letter by letter ("t: no such file", ...), a Path blamed its file.
    image = tmp_path / "shirt.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    with pytest.raises(UserError, match="give a list of paths"):
        predict.read_images(str(image))
    assert predict.read_images([image]).names == [str(image)]


def test_a_name_with_a_newline_is_one_line_of_output_not_two(tmp_path):
    # "a\nfake.png: dress 1.000" forged a line of predict's output of its own (trial 10).
    forged = str(_save(GRAY, tmp_path / "a\nfake.png: dress 1.000.png"))
    missing = str(tmp_path / "b\nmissing.png")
    images = predict.read_images([forged, missing])
    (line,) = predict.top_classes_lines(images.names, np.eye(10)[:1])
    (error,) = images.errors
    assert line.startswith(f"{tmp_path}/a\\nfake.png: dress 1.000.png: t-shirt 1.000")
    assert error == f"{tmp_path}/b\\nmissing.png: no such file"
    assert images.names == [forged]  # Python's callers get the name as it is.
