"""Shared fixtures: synthetic Fashion-MNIST-shaped IDX files and tiny configs."""

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlp_jax import data

ROOT = Path(__file__).resolve().parents[1]
# A folder whose sitecustomize hides TensorFlow, TFDS, Keras and PyTorch from a subprocess.
WITHOUT_TENSORFLOW = ROOT / "tests" / "without_tensorflow"
IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801


def write_idx(path: Path, array: np.ndarray, magic: int) -> Path:
    """Writes `array` (uint8) as an IDX file, gzip-compressed if `path` ends in .gz."""
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=1)
    path.write_bytes(payload)
    return path


# A tenth of the synthetic labels are redrawn at random, so no model exceeds about 0.91.
SYNTHETIC_LABEL_NOISE = 0.1


def synthetic_split(num_examples: int, seed: int) -> data.Split:
    """A learnable but hard stand-in: each class lights a different band of rows, faintly,
    over strong uniform noise, and some labels are wrong; one epoch of the tiny model ends
    far from perfect accuracy, so an accuracy bug shows in the numbers."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, num_examples).astype(np.int32)
    images = rng.integers(0, 200, (num_examples, 28, 28), dtype=np.uint8)
    for c in range(10):
        images[labels == c, 2 * c + 3 : 2 * c + 6, :] += 40
    noisy = rng.random(num_examples) < SYNTHETIC_LABEL_NOISE
    labels[noisy] = rng.integers(0, 10, int(noisy.sum()))
    return data.Split(images.reshape(num_examples, -1), labels)


def write_synthetic_dataset(directory: Path) -> Path:
    """Full-size (60,000 / 10,000) synthetic IDX files, raw, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, seed in (("train", 0), ("test", 1)):
        images_stem, labels_stem = data._FILE_STEMS[split]
        s = synthetic_split(data.SPLIT_SIZES[split], seed)
        write_idx(directory / images_stem, s.images.reshape(-1, 28, 28), IMAGES_MAGIC)
        write_idx(directory / labels_stem, s.labels.astype(np.uint8), LABELS_MAGIC)
    return directory


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A folder of full-size synthetic IDX files (written once per session)."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic_fashion_mnist"))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real dataset (CI installs Debian's dataset-fashion-mnist); fails if absent."""
    for _, directory in data.candidate_dirs():
        if data.has_idx_files(directory):
            return directory
    pytest.fail(
        "real Fashion-MNIST not found: `apt-get install dataset-fashion-mnist` or set "
        f"{data.ENV_VAR}; these tests do not skip"
    )


# The tuned recipe's features, whose random streams and optimiser state are what resumption
# and populations most easily get wrong: dropout, augmentation, label smoothing, AdamW with
# weight decay and a warmed-up cosine schedule.
TUNED_FEATURES = {
    "dropout": 0.1,
    "augment_shift": 1,
    "augment_flip": True,
    "label_smoothing": 0.1,
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "lr": 0.002,
    "schedule": "cosine",
    "warmup_epochs": 1,
}
# The best-MLP ingredients on top (issue 15): distortions, erasing, MixUp or CutMix, a moving
# average of the parameters, LayerNorm and skip connections.
BEST_FEATURES = {
    **TUNED_FEATURES,
    "augment_rotate": 10.0,
    "augment_scale": 0.1,
    "augment_elastic": 34.0,
    "augment_erase": 0.5,
    "mixup_alpha": 0.4,
    "cutmix_alpha": 1.0,
    "ema_decay": 0.9,
    "norm": "layer",
    "residual": True,
    "num_layers": 2,
}


# Runs compared across device counts use this learning rate. On the noisy synthetic data,
# lr 0.1 makes training chaotic enough that the rounding differences between device counts
# (sums in another order) grow to 4 % of a weight in 2 epochs on 4 devices; at 0.02 the runs
# on 1, 2 and 4 devices agree to 3e-7.
PARALLEL_LR = 0.02


def kill_mid_write(monkeypatch):
    """Makes every text write stop halfway through, as a kill would."""

    def half_then_killed(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half_then_killed)


def config_overrides(**fields) -> list[str]:
    """The command-line flags that set config `fields`."""
    return [f"--config.{key}={value}" for key, value in fields.items()]


def tiny_config(data_dir: Path, experiment: str = "mlp_concise", **overrides):
    """An experiment's config made small: 1 epoch, 32 hidden units, the given data."""
    module = __import__(f"experiments.{experiment}", fromlist=["get_config"])
    config = module.get_config()
    config.data_dir = str(data_dir)
    config.num_epochs = 1
    config.num_hiddens = 32
    config.update(overrides)
    return config


def without_tensorflow_env(env: dict | None = None) -> dict:
    """os.environ plus `env`, with TensorFlow, TFDS, Keras and PyTorch hidden (see
    tests/without_tensorflow): the training path must run where they are not installed."""
    path = [str(WITHOUT_TENSORFLOW), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(filter(None, path))}


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 300, module: str = "mlp_jax.main"
) -> subprocess.CompletedProcess:
    """Runs `python -m MODULE ARGS` from the repository root, without TensorFlow."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=without_tensorflow_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
