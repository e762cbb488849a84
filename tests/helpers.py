"""What the tests share: synthetic Fashion-MNIST-shaped data, tiny configs, the features whose
random streams are easiest to get wrong, and the command line run as a user runs it."""

import gzip
import hashlib
import os
import struct
import subprocess
from pathlib import Path

import jax
import numpy as np

from benchmarks import launch
from mlp_jax import checkpointing, data, files, steps, train
from mlp_jax import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
# A folder whose sitecustomize hides TensorFlow, TFDS, Keras and PyTorch from a subprocess.
WITHOUT_TENSORFLOW = ROOT / "tests" / "without_tensorflow"
IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801
# Examples in the small synthetic splits (conftest's `synthetic_dir`): 24 batches of 256.
SMALL_SIZES = {"train": 6_000, "test": 1_000}
# Fashion-MNIST's own sizes, for the runs that must last (signals, a busy workdir).
FULL_SIZES = {"train": 60_000, "test": 10_000}

# The pure train step compiled, as the library's programs run it: called eagerly, each of
# its hundreds of operations would be compiled on its own, a second or more of a test.
train_step = jax.jit(steps.train_step, static_argnames=("options", "axis_name"))


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


def write_synthetic_dataset(directory: Path, sizes: dict[str, int] = SMALL_SIZES) -> Path:
    """Synthetic IDX files, raw, in `directory`: `sizes` images per split."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, seed in (("train", 0), ("test", 1)):
        images_stem, labels_stem = data._FILE_STEMS[split]
        s = synthetic_split(sizes[split], seed)
        write_idx(directory / images_stem, s.images.reshape(-1, 28, 28), IMAGES_MAGIC)
        write_idx(directory / labels_stem, s.labels.astype(np.uint8), LABELS_MAGIC)
    return directory


def small_dataset(with_test: bool = True) -> data.Dataset:
    """Small splits in memory: 2,000 to train on, 500 to validate on, 500 to test on."""
    test = synthetic_split(500, 2) if with_test else None
    return data.Dataset(synthetic_split(2000, 0), synthetic_split(500, 1), test)


def experiment(name: str):
    """The module of experiments/NAME.py, as the library loads it for a config naming it."""
    return config_lib.load_module(ROOT / "experiments" / f"{name}.py")


def study(path: str):
    """The config of a study's file, e.g. study("exercises/width")."""
    return config_lib.load_experiment(ROOT / "experiments" / "studies" / f"{path}.py")


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
    """Makes every write of `files.write_atomically` (the library's files and records) stop
    halfway through, as a kill would."""

    def half_then_killed(descriptor, data):
        os.write(descriptor, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "_write_all", half_then_killed)


# Epochs of the runs that resumption tests interrupt and compare.
RESUMABLE_EPOCHS = 3


def resumable_config(data_dir: Path, **overrides):
    """The tiny config with the tuned recipe's features, for RESUMABLE_EPOCHS epochs."""
    return tiny_config(data_dir, num_epochs=RESUMABLE_EPOCHS, **{**TUNED_FEATURES, **overrides})


def train_uninterrupted(data_dir: Path, workdir: Path):
    """(workdir, result) of `resumable_config` trained with nothing interrupting it: the
    reference every resumption must equal."""
    return workdir, train.train_and_evaluate(resumable_config(data_dir), workdir)


def params_fingerprint(result) -> str:
    """The fingerprint of a finished run's parameters (what --mode=eval prints)."""
    return checkpointing.params_fingerprint(result.state.params)


def count_traces(monkeypatch) -> list:
    """Makes `steps.train_epoch` note each time it is traced (a Python side effect of a traced
    function runs only then) in the list returned, for the rest of the test."""
    traced, epoch = [], steps.train_epoch

    def counted(*args, **kwargs):
        traced.append(1)
        return epoch(*args, **kwargs)

    monkeypatch.setattr(steps, "train_epoch", counted)
    return traced


def tree_listing(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a hash of its bytes: equal iff nothing changed."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def largest_file(directory: Path) -> Path:
    """The largest file under `directory` (in a checkpoint: the parameters' data)."""
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


# The command line's tiny run: the concise MLP with 32 hidden units (`trained_workdir` trains
# it TRAINED_EPOCHS epochs).
TINY = ["--config=experiments/mlp_concise.py", "--config.num_hiddens=32"]
TRAINED_EPOCHS = 2


def config_overrides(**fields) -> list[str]:
    """The command-line flags that set config `fields`."""
    return [f"--config.{key}={value}" for key, value in fields.items()]


def tiny_config(data_dir: Path, experiment_name: str = "mlp_concise", **overrides):
    """An experiment's config made small: 1 epoch, 32 hidden units, the given data."""
    config = experiment(experiment_name).get_config()
    config.data_dir = str(data_dir)
    config.num_epochs = 1
    config.num_hiddens = 32
    config.update(overrides)
    return config


def without_tensorflow_env(env: dict | None = None) -> dict:
    """os.environ plus `env`, with TensorFlow, TFDS, Keras and PyTorch hidden (see
    tests/without_tensorflow): the training path must run where they are not installed."""
    env = env or {}
    path = [
        str(WITHOUT_TENSORFLOW),
        str(ROOT),
        str(ROOT / "tests"),  # helpers, for the tests' own scripts.
        env.get("PYTHONPATH", ""),
        os.environ.get("PYTHONPATH", ""),
    ]
    return {**os.environ, **env, "PYTHONPATH": os.pathsep.join(filter(None, path))}


# XLA's CPU flags of the unit tier (pytest --quick-compile, as the Makefile runs it) and of
# the device check on tiny sizes: compile without optimising, with the older emitters, each
# module in one piece rather than split for threads (each test process compiles beside
# another). For tiny programs each run once, half the time (the unit tier: 369 CPU seconds
# with XLA's defaults, 186 with the first two; the device check 88 and 55; 2-core Xeon), and
# the split a further 7 % of the fast tier (62-64 s, 57-59 s with it, fresh caches, 2-core
# Xeon, 2026-12-07); where epochs of full-size data run, the code runs slower than the
# compile saves.
QUICK_COMPILE_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
    "--xla_cpu_parallel_codegen_split_count=1"
)


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 300, module: str = "mlp_jax.main"
) -> launch.Finished:
    """Runs `python -m MODULE ARGS` from the repository root to its end, without
    TensorFlow."""
    return launch.run(
        *args, module=module, env=without_tensorflow_env(env), cwd=ROOT, timeout=timeout
    )


def start_cli(*args: str, env: dict | None = None, module: str = "mlp_jax.main", wrapper=()):
    """Starts `python -m MODULE ARGS` from the repository root, without TensorFlow, run by
    `wrapper` (e.g. ("nohup",)); returns the running process."""
    return subprocess.Popen(
        [*wrapper, *launch.command(*args, module=module)],
        cwd=ROOT,
        env=without_tensorflow_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_one_line_error(result, *fragments) -> str:
    """Asserts that a command failed with one `error: ...` line on stderr holding every
    fragment, and no traceback; returns the line."""
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
