"""Fashion-MNIST as validated uint8 arrays: IDX files first, TFDS where the network allows.

This module knows files and arrays, nothing of models or training. Images stay uint8
(47 MB for the training split) so that the whole dataset fits on any device; the compiled
step scales them to [0, 1].
"""

import contextlib
import gzip
import hashlib
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from etils import epath

from mlp_jax import files
from mlp_jax.errors import UserError, first_line

CLASS_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (28, 28)
NUM_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "FASHION_MNIST_DIR"
_FILE_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX magic: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_INSTALL_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download the four "
    "IDX files from github.com/zalandoresearch/fashion-mnist into a folder and pass "
    f"--config.data_dir=FOLDER or set {ENV_VAR}"
)


class Split(NamedTuple):
    """One split of the dataset.

    Attributes:
      images: uint8 array of shape (N, 784), row-major 28x28 images.
      labels: int32 array of shape (N,), class indices in [0, 10).
    """

    images: np.ndarray
    labels: np.ndarray


class Dataset(NamedTuple):
    """The training split, the split that validates, and the test split.

    `validation` is carved from the 60,000 training images when a run asks for one, else it is
    the test split itself (d2l's convention: its "validation" accuracy is test accuracy).
    """

    train: Split
    validation: Split
    test: Split


# Where gzip-compressed IDX files are kept decompressed, so that a run reads 55 MB rather than
# inflating 30 MB (a third of a second on a CPU core at every start); "" keeps none.
CACHE_ENV_VAR = "MLP_JAX_DATA_CACHE"
_DEFAULT_CACHE = "~/.cache/mlp_jax/idx"


def _cache_path(path: epath.Path, trailer: bytes) -> Path | None:
    """Where the inflated copy of the local .gz file `path` is kept, or None (no cache, or
    a remote file): named by the file's absolute path, then by its size, modification time
    and gzip trailer (the CRC-32 and length of its content), so that a changed file is
    inflated afresh and its older copy replaced."""
    folder = files.expand_home(os.environ.get(CACHE_ENV_VAR, _DEFAULT_CACHE))  # None: no home.
    try:
        stat = os.stat(os.fspath(path))
    except (OSError, TypeError):  # Remote (gs://): read as it is.
        return None
    if not folder:
        return None
    where = _digest(os.path.abspath(os.fspath(path)))
    version = _digest(f"{stat.st_size}:{stat.st_mtime_ns}:{trailer.hex()}")
    return Path(folder) / f"{path.name.removesuffix('.gz')}.{where}.{version}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _inflate(path: epath.Path) -> bytes:
    """The decompressed bytes of the .gz file `path`: its cached copy where one is kept
    whose length and CRC-32 are those the gzip trailer records, else inflated and kept for
    next time. The cache is an optimisation: any failure to read or write it falls back to
    the file."""
    compressed = files.read_bytes(path)
    trailer = compressed[-8:]
    cached = _cache_path(path, trailer) if len(trailer) == 8 else None
    if cached is not None:
        with contextlib.suppress(OSError, UserError):  # A pipe there is refused, not read.
            raw = files.read_bytes(cached)
            if struct.pack("<II", zlib.crc32(raw), len(raw) % 2**32) == trailer:
                return raw
    raw = gzip.decompress(compressed)
    if cached is not None:
        _keep(cached, raw)
    return raw


def _keep(cached: Path, raw: bytes) -> None:
    """Writes a cache file whole or not at all (a full disk, a read-only home, an interrupt:
    nothing is left), and removes the older copies of the same file."""
    tmp = None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as f:
            tmp = f.name
            f.write(raw)
        os.replace(tmp, cached)  # Whole or absent, whoever reads it meanwhile.
        tmp = None
        for older in cached.parent.glob(f"{cached.name.rsplit('.', 1)[0]}.*"):
            if older != cached:
                older.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _read_idx(path: epath.Path, magic: int, expected_dims: tuple[int | None, ...]) -> np.ndarray:
    """Reads one IDX file (raw or gzip) and checks its magic number and size."""
    try:
        raw = _inflate(path) if path.suffix == ".gz" else files.read_bytes(path)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:  # Its bytes are damaged.
        raise UserError(f"{path}: cannot read ({e}); fetch the file again") from None
    header_size = 4 + 4 * len(expected_dims)
    if len(raw) < header_size:
        raise UserError(f"{path}: truncated header ({len(raw)} bytes); fetch the file again")
    (found_magic,) = struct.unpack(">I", raw[:4])
    if found_magic != magic:
        raise UserError(
            f"{path}: wrong magic number 0x{found_magic:08x} (expected 0x{magic:08x}); "
            "this is not a Fashion-MNIST IDX file of that kind"
        )
    dims = struct.unpack(f">{len(expected_dims)}I", raw[4:header_size])
    for axis, (found, expected) in enumerate(zip(dims, expected_dims, strict=True)):
        if expected is not None and found != expected:
            raise UserError(f"{path}: dimension {axis} is {found}, expected {expected}")
    expected_bytes = int(np.prod(dims))
    body = raw[header_size:]
    if len(body) != expected_bytes:
        raise UserError(
            f"{path}: truncated or padded ({len(body)} data bytes, the header promises "
            f"{expected_bytes}); fetch the file again"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find_file(directory: epath.Path, stem: str) -> epath.Path | None:
    for name in (stem, stem + ".gz"):
        try:
            if (directory / name).is_file():
                return directory / name
        except OSError as e:  # (A bucket's refusal, which gcsfs raises naming no file.)
            raise files.with_path(e, directory / name) from None
    return None


def has_idx_files(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds all four Fashion-MNIST IDX files (raw or .gz)."""
    return not _missing_idx_files(directory)


def _missing_idx_files(directory: str | os.PathLike) -> list[str]:
    """The stems of the four IDX files `directory` lacks (raw or .gz)."""
    stems = [stem for pair in _FILE_STEMS.values() for stem in pair]
    return [stem for stem in stems if _find_file(files.as_path(directory), stem) is None]


def _lacks(label: str, directory) -> str:
    """'LABEL=DIR lacks ...', naming the files missing when the folder holds some of them."""
    missing = _missing_idx_files(directory)
    which = f" ({', '.join(missing)})" if len(missing) < 4 else ""
    return f"{label}={directory} lacks the Fashion-MNIST IDX files{which}"


def read_idx_split(directory: str | os.PathLike, split: str) -> Split:
    """Reads and validates one split ("train" or "test") from IDX files in `directory`.

    Any number of images is read (Fashion-MNIST has 60,000 and 10,000; the tests write
    small sets), as long as the images file and the labels file agree on it.

    Args:
      directory: folder with the IDX files, raw or gzip-compressed.
      split: "train" or "test".

    Returns:
      The split with images flattened to (N, 784) uint8 and labels as int32.

    Raises:
      UserError: a file is missing, truncated, of the wrong kind or holds bad labels.
    """
    directory = files.as_path(directory)
    images_stem, labels_stem = _FILE_STEMS[split]
    paths = [_find_file(directory, stem) for stem in (images_stem, labels_stem)]
    for stem, path in zip((images_stem, labels_stem), paths, strict=True):
        if path is None:
            raise UserError(f"{directory}/{stem}[.gz]: missing; {_INSTALL_HINT}")
    images = _read_idx(paths[0], _IMAGES_MAGIC, (None, *IMAGE_SHAPE))
    labels = _read_idx(paths[1], _LABELS_MAGIC, (None,))
    if len(images) != len(labels):
        raise UserError(
            f"{paths[1]}: {len(labels)} labels for the {len(images)} images of {paths[0].name}; "
            "fetch both files again"
        )
    count = len(labels)
    if not count:
        raise UserError(f"{paths[0]}: holds no images; fetch the file again")
    if labels.max() >= NUM_CLASSES:
        raise UserError(f"{paths[1]}: label {labels.max()} outside 0-9; fetch the file again")
    return Split(images.reshape(count, NUM_PIXELS), labels.astype(np.int32))


def _load_tfds() -> tuple[Split, Split]:
    """Fashion-MNIST through TFDS (needs the network on first use)."""
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415  (optional, heavy)
    except ImportError as e:
        raise UserError(f"TFDS is not installed ({e})") from None
    _hide_gpus_from_tensorflow()
    splits = []
    for split in ("train", "test"):
        data = tfds.as_numpy(tfds.load("fashion_mnist", split=split, batch_size=-1))
        images = data["image"].reshape(-1, NUM_PIXELS).astype(np.uint8)
        splits.append(Split(images, data["label"].astype(np.int32)))
    return splits[0], splits[1]


def _hide_gpus_from_tensorflow() -> None:
    """Keeps TensorFlow (imported for TFDS alone) off the accelerators, so that it does not
    claim memory JAX needs, and keeps its start-up quiet."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf  # noqa: PLC0415

    tf.config.set_visible_devices([], "GPU")


# Where a data_dir came from, as a message names it, and how to mend it when it lacks the files.
FROM_CONFIG = ("--config.data_dir", "point it at a folder that holds them")


def candidate_dirs(
    data_dir: str = "", source: tuple[str, str] = FROM_CONFIG
) -> list[tuple[str, epath.Path]]:
    """The IDX folders to try, in order, each with a label saying where it came from."""
    candidates = []
    if data_dir:
        candidates.append((source[0], files.as_path(data_dir)))
    if os.environ.get(ENV_VAR):
        candidates.append((f"${ENV_VAR}", files.as_path(os.environ[ENV_VAR])))
    candidates.append(("Debian package dataset-fashion-mnist", files.as_path(DEBIAN_DIR)))
    return candidates


def find_idx_dir(data_dir: str = "") -> epath.Path | None:
    """The first candidate folder that holds the IDX files, or None."""
    for _, directory in candidate_dirs(data_dir):
        if has_idx_files(directory):
            return directory
    return None


def load_fashion_mnist(
    data_dir: str = "", use_tfds: bool = True, source: tuple[str, str] = FROM_CONFIG
) -> tuple[Split, Split]:
    """Loads the training and test splits from the first source that has them.

    Sources, in order: `data_dir`; the FASHION_MNIST_DIR environment variable; the Debian
    package's folder; TFDS `fashion_mnist` (if `use_tfds` and it is installed).
    An explicit `data_dir` that lacks the files is an error: the user asked for that folder.
    `source` names where `data_dir` came from and how to mend it, for that error.

    Returns:
      (train, test) splits.
    """
    tried = []
    for label, directory in candidate_dirs(data_dir, source):
        if has_idx_files(directory):
            return read_idx_split(directory, "train"), read_idx_split(directory, "test")
        if label == source[0]:  # The user asked for that folder.
            raise UserError(f"{_lacks(label, directory)}; {source[1]}")
        if label == f"${ENV_VAR}":
            raise UserError(
                f"{_lacks(label, directory)}; point it at a folder that holds them or unset it"
            )
        tried.append(f"{label} ({directory})")
    if use_tfds:
        try:
            return _load_tfds()
        except UserError as e:
            tried.append(f"TFDS ({e})")
        except Exception as e:  # noqa: BLE001  (TFDS fails in many ways offline)
            tried.append(f"TFDS ({type(e).__name__}: {first_line(e, 120)})")
    raise UserError(f"Fashion-MNIST not found; tried {'; '.join(tried)}; {_INSTALL_HINT}")


def load_training_split(data_dir: str = "") -> Split:
    """The training images alone, from IDX files: for searches that must not read the
    test split at all."""
    directory = find_idx_dir(data_dir)
    if directory is None:
        tried = "; ".join(f"{label} ({path})" for label, path in candidate_dirs(data_dir))
        raise UserError(f"Fashion-MNIST IDX files not found; tried {tried}; {_INSTALL_HINT}")
    return read_idx_split(directory, "train")


def carve_validation(train: Split, size: int, seed: int) -> tuple[Split, Split]:
    """Splits `size` examples off the training split, chosen by a seeded permutation.

    Returns:
      (remaining training split, validation split).
    """
    if not 0 < size < len(train.labels):
        raise UserError(f"validation_size={size} must lie in 1..{len(train.labels) - 1}")
    order = np.random.default_rng(seed).permutation(len(train.labels))
    keep, held_out = order[:-size], order[-size:]
    return (
        Split(train.images[keep], train.labels[keep]),
        Split(train.images[held_out], train.labels[held_out]),
    )


def load_held_out_dataset(data_dir: str, validation_size: int, split_seed: int) -> Dataset:
    """The training split with `validation_size` images held out of it, and no test split:
    what a search chooses on (it never reads the test split)."""
    train, validation = carve_validation(load_training_split(data_dir), validation_size, split_seed)
    return Dataset(train, validation, None)


def load_dataset(data_dir: str = "", validation_size: int = 0, split_seed: int = 0) -> Dataset:
    """Loads Fashion-MNIST and arranges it for a run.

    Args:
      data_dir: optional folder with the IDX files (see `load_fashion_mnist`).
      validation_size: if > 0, hold this many training images out for validation; if 0, the
        test split validates (as in d2l).
      split_seed: seed of the permutation that picks the held-out images.
    """
    train, test = load_fashion_mnist(data_dir)
    if validation_size:
        train, validation = carve_validation(train, validation_size, split_seed)
    else:
        validation = test
    return Dataset(train, validation, test)


def check_dataset(dataset: Dataset, splits: tuple[str, ...] = ("train", "validation")) -> None:
    """Refuses a hand-made dataset the library would train on without a word and wrongly (or
    fail on deep in JAX): each of `splits` must hold uint8 images of shape (N, 784), N >= 1,
    and N integer labels in [0, 10), as `load_dataset` gives (the labels' values are read
    where they are numpy's, not copied back from a device).

    Raises:
      TypeError: `dataset` is not a `Dataset`, or a split not a `Split` of arrays.
      ValueError: a split's arrays are of another dtype, shape or length, or its labels lie
        outside the classes; the message names the split and the fix.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"dataset is a {type(dataset).__name__}, not a mlp_jax.data.Dataset: give "
            "data.load_dataset(config.data_dir, config.validation_size, config.split_seed)"
        )
    for name in splits:
        _check_split(getattr(dataset, name), f"dataset.{name}")


def _check_split(split: Split, name: str) -> None:
    if not isinstance(split, Split):
        raise TypeError(f"{name} is a {type(split).__name__}, not a mlp_jax.data.Split")
    images, labels = split
    for part, array in ((f"{name}.images", images), (f"{name}.labels", labels)):
        if not all(hasattr(array, attribute) for attribute in ("dtype", "shape", "ndim")):
            raise TypeError(
                f"{part} is a {type(array).__name__}, not an array: give np.asarray(...)"
            )
    if images.dtype != np.uint8:
        raise ValueError(
            f"{name}.images are {images.dtype}, not uint8 pixels in [0, 255] as Fashion-MNIST's "
            "(the compiled step scales them): give images.astype(np.uint8), or from floats in "
            "[0, 1] np.round(images * 255).astype(np.uint8)"
        )
    if images.ndim != 2 or images.shape[1] != NUM_PIXELS:
        raise ValueError(
            f"{name}.images are of shape {tuple(images.shape)}, not (N, {NUM_PIXELS}): give "
            f"images.reshape(len(images), {NUM_PIXELS})"
        )
    if not len(images):
        raise ValueError(f"{name} is empty: give a split of one image or more")
    if (
        labels.ndim != 1
        or len(labels) != len(images)
        or not np.issubdtype(labels.dtype, np.integer)
    ):
        raise ValueError(
            f"{name}.labels are {labels.dtype} of shape {tuple(labels.shape)}: give one integer "
            f"label for each of its {len(images)} images"
        )
    if not isinstance(labels, np.ndarray):  # On a device: its values are not copied back.
        return
    low, high = int(np.min(labels)), int(np.max(labels))
    if low < 0 or high >= NUM_CLASSES:
        raise ValueError(
            f"{name}.labels hold {low if low < 0 else high}, outside the {NUM_CLASSES} classes "
            f"[0, {NUM_CLASSES})"
        )


def fingerprint(dataset: Dataset) -> str:
    """What a run's checkpoints were trained on, in short: each split's size and a digest of
    their labels, in order (another dataset, or the same files swapped or reordered, differ;
    the same files moved do not). Labels only (0.3 ms): a digest of the images would add
    0.08 s to every start (2-core Xeon, 2026-12-07)."""
    digest = hashlib.sha256()
    for split in dataset:
        digest.update(np.ascontiguousarray(split.labels, np.int32).tobytes())
    sizes = "/".join(str(len(split.labels)) for split in dataset)
    return f"{sizes}:{digest.hexdigest()[:16]}"
