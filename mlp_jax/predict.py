"""Classifying images with a trained workdir: `python -m mlp_jax.main --mode=predict`.

Images are PNG or JPEG files of any size and bit depth, made 28x28 grayscale as
Fashion-MNIST's are (a transparent background read as the dataset's black), or `.npy`
batches; a file that cannot be read is one line of its own, and the others are still
classified. The model is the workdir's latest readable checkpoint, read-only.
"""

import io
import os
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from mlp_jax import checkpointing, data, files, steps
from mlp_jax.errors import UserError, first_line


class Images(NamedTuple):
    """Images read for classification.

    Attributes:
      names: one per image: its file, or `FILE[i]` for the i-th image of a batch.
      pixels: uint8 (N, 784), as the model is fed.
      errors: one line per file that could not be read.
    """

    names: list[str]
    pixels: np.ndarray
    errors: list[str]


def _image_file(path: str) -> np.ndarray:
    """A PNG or JPEG as 28x28 uint8 grayscale, shaped (1, 784): read at its own bit depth
    and with its transparency (see `_intensity`), resized in floating point, rounded once."""
    from PIL import Image, ImageOps  # noqa: PLC0415  (only classification reads images)

    with warnings.catch_warnings():  # A large photo is read as it is; past PIL's limit, refused.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(files.read_bytes(files.as_path(path)))) as image:
            image.load()
            # Upright, as a phone's photo is seen: its pixels are stored as the sensor lay,
            # and its EXIF orientation says how to turn them.
            upright = ImageOps.exif_transpose(image)
            intensity = Image.fromarray(_intensity(upright), mode="F")
    small = intensity.resize(data.IMAGE_SHAPE[::-1], Image.Resampling.LANCZOS)
    pixels = np.clip(np.round(np.asarray(small, np.float32) * 255), 0, 255)
    return pixels.astype(np.uint8).reshape(1, data.NUM_PIXELS)


# Pillow's modes of one channel of more than 8 bits, and the largest value of each.
_DEEP_MODES = {"I;16": 2**16 - 1, "I;16B": 2**16 - 1, "I;16L": 2**16 - 1, "I;16N": 2**16 - 1}


def _intensity(image) -> np.ndarray:
    """The image's gray level in [0, 1] (float32, HxW), as what it is: a 16-bit image scaled
    by its own range, not clipped at 255; a transparent pixel as the dataset's background
    (0), a partly transparent one in proportion, as if composed over black."""
    if image.mode in _DEEP_MODES:
        values = np.asarray(image, np.float32)
        transparent = image.info.get("transparency")  # One gray level, as PNG's tRNS gives.
        opaque = values != transparent if isinstance(transparent, int) else 1.0
        return values / _DEEP_MODES[image.mode] * opaque
    if image.mode == "I":  # 32-bit integers: PNG and TIFF hold 16 bits at most there.
        values = np.asarray(image, np.float32)
        if values.min() < 0 or values.max() > 2**16 - 1:
            raise ValueError("32-bit integer pixels outside 0..65535; give 8 or 16 bits")
        return values / (2**16 - 1)
    if image.mode == "F":
        values = np.asarray(image, np.float32)
        if not (np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1):
            raise ValueError("floating-point pixels outside [0, 1]")
        return values
    has_alpha = image.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), np.float32) / 255
    gray, alpha = (np.asarray(band, np.float32) / 255 for band in image.convert("LA").split())
    return gray * alpha


def _npy_file(path: str) -> np.ndarray:
    """A `.npy` batch, (N, 28, 28) or (N, 784), of uint8 pixels or floats in [0, 1]."""
    array = np.load(io.BytesIO(files.read_bytes(files.as_path(path))), allow_pickle=False)
    if array.ndim not in (2, 3) or array.shape[1:] not in ((data.NUM_PIXELS,), data.IMAGE_SHAPE):
        raise ValueError(f"an array of shape {array.shape}, not (N, 28, 28) or (N, 784)")
    if not len(array):
        raise ValueError("a batch of no images")
    array = array.reshape(len(array), data.NUM_PIXELS)
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating) and np.all((array >= 0) & (array <= 1)):
        return np.round(array * 255).astype(np.uint8)
    raise ValueError(f"{array.dtype} values; give uint8 pixels or floats in [0, 1]")


def read_images(paths: Sequence[str | os.PathLike]) -> Images:
    """Reads every file it can; each one it cannot is a line in `errors`.

    Raises:
      UserError: `paths` is one path, not a list of them (whose letters would each be
        read as a file).
    """
    if isinstance(paths, str | bytes | os.PathLike):
        raise UserError(f"{os.fsdecode(paths)}: give a list of paths, e.g. [{str(paths)!r}]")
    names, batches, errors = [], [], []
    for path in map(os.fspath, paths):
        if not isinstance(path, str):
            raise TypeError(f"a path is a str or a pathlib.Path, not bytes: {path!r}")
        is_batch = path.lower().endswith(".npy")
        try:
            batch = _npy_file(path) if is_batch else _image_file(path)
        except FileNotFoundError:
            errors.append(f"{one_line(path)}: no such file")
            continue
        except Exception as e:  # noqa: BLE001  (a bad file is the user's, whatever PIL raises)
            errors.append(f"{one_line(path)}: cannot be classified ({_reason(e)})")
            continue
        names += [f"{path}[{i}]" for i in range(len(batch))] if is_batch else [path]
        batches.append(batch)
    pixels = np.concatenate(batches) if batches else np.zeros((0, data.NUM_PIXELS), np.uint8)
    return Images(names, pixels, errors)


def _reason(error: Exception) -> str:
    if type(error).__name__ == "UnidentifiedImageError":  # PIL's message names a buffer.
        return "not an image PIL can read; give a PNG, a JPEG or a .npy batch"
    if type(error).__name__ == "DecompressionBombError":
        return f"{first_line(error).split(', could')[0]}; resize it first"
    return first_line(error)


def probabilities_fn(restored: checkpointing.Restored):
    """The trained model as a pure function from uint8 pixels (B, 784) to class
    probabilities (B, 10), its parameters (the moving average, where the run kept one)
    closed over: what `--mode=predict` runs and `--mode=export` serializes."""
    params = steps.evaluation_params(restored.state)
    apply_fn, compute_dtype = restored.model.apply, restored.config.compute_dtype

    def probabilities(pixels_Bx784):
        logits = steps.model_logits(apply_fn, params, pixels_Bx784, compute_dtype)
        return jax.nn.softmax(logits, axis=-1)

    return probabilities


def top_classes_lines(names: list[str], probabilities: np.ndarray, k: int = 3) -> list[str]:
    """One line per image: its name, the likeliest class and its probability, then the next
    `k - 1` classes."""
    lines = []
    for name, row in zip(names, probabilities, strict=True):
        first, *rest = (f"{data.CLASS_NAMES[c]} {row[c]:.3f}" for c in np.argsort(-row)[:k])
        lines.append(f"{one_line(name)}: {first} (then {', '.join(rest)})")
    return lines


def one_line(name: str) -> str:
    """`name` as one line of output: where it holds a newline or another character that is
    not printed as itself, escaped as Python writes it (a file named "a\nb.png: dress 1.000"
    forged a line of its own)."""
    return name if name.isprintable() else repr(name)[1:-1]


def classify(
    workdir: str | os.PathLike, paths: Sequence[str | os.PathLike]
) -> tuple[list[str], list[str]]:
    """Classifies the images in `paths` with the workdir's latest readable checkpoint.

    Returns:
      (one line per image, one line per file that could not be read).

    Raises:
      UserError: no files given, one path given where a list is needed, or the workdir has
        no readable checkpoint.
    """
    if not paths:
        raise UserError("--mode=predict needs image files (PNG, JPEG or .npy) after the flags")
    restored = checkpointing.restore_workdir(workdir)
    images = read_images(paths)
    if not images.names:
        return [], images.errors
    # Each way explicitly: a caller's transfer guard is for its own implicit transfers.
    pixels = jax.device_put(images.pixels)
    probabilities = jax.device_get(jax.jit(probabilities_fn(restored))(pixels))
    return top_classes_lines(images.names, probabilities), images.errors
