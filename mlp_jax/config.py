"""The library's configuration fields, their defaults, and their validation.

Experiment files (`experiments/*.py`) start from `base_config()`, name their model and set
their own fields; the library reads the model's hyperparameters from the config fields that
share the model's attribute names (see `mlp_jax.models.build_model`).
"""

import importlib.util
import os
from pathlib import Path

import ml_collections

from mlp_jax.errors import UserError, closest

PARALLEL_MODES = ("auto", "none", "pmap", "shard_map")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
COMPUTE_DTYPES = ("float32", "bfloat16")
NORMS = ("none", "layer")


def base_config() -> ml_collections.ConfigDict:
    """The training fields every experiment has, with d2l's chapter 5.2 values."""
    config = ml_collections.ConfigDict()
    # Import path "package.module:ClassName" of the Flax module to train.
    config.model = ""
    # Folder with the four Fashion-MNIST IDX files; "" searches $FASHION_MNIST_DIR, then
    # /usr/share/datasets/fashion-mnist, then TFDS.
    config.data_dir = ""
    # Training images held out to validate on; 0 validates on the test split, as d2l does.
    config.validation_size = 0
    # Seed of the permutation that chooses the held-out validation images.
    config.split_seed = 0
    # Seed of parameter initialisation, data order and dropout.
    config.seed = 0
    # Passes over the training split.
    config.num_epochs = 10
    # Global minibatch size (split across devices when training data-parallel).
    config.batch_size = 256
    # Examples per evaluation chunk; it changes memory, not results.
    config.eval_batch_size = 2000
    # Optimiser: one of OPTIMIZERS (d2l uses plain SGD).
    config.optimizer = "sgd"
    # Peak learning rate.
    config.lr = 0.1
    # Momentum for "momentum"; b1 for adam/adamw.
    config.momentum = 0.9
    # Decoupled weight decay for "adamw", L2-style decay for the others; 0 disables it.
    config.weight_decay = 0.0
    # Learning-rate schedule: one of SCHEDULES.
    config.schedule = "constant"
    # Epochs of linear warm-up before the schedule.
    config.warmup_epochs = 0
    # Label smoothing of the cross-entropy target; 0 is d2l's loss.
    config.label_smoothing = 0.0
    # Dtype of the model's arithmetic: "float32" (the chapter's) or "bfloat16" (mixed
    # precision: parameters, optimiser state, loss and softmax stay float32; the matrix
    # products take bfloat16 operands and accumulate in float32).
    config.compute_dtype = "float32"
    # Random translation of training images by up to this many pixels each way; 0 is off.
    config.augment_shift = 0
    # Random horizontal flips of training images.
    config.augment_flip = False
    # Random rotation of training images by up to this many degrees each way; 0 is off.
    config.augment_rotate = 0.0
    # Random scaling of training images by a factor in [1 - s, 1 + s]; 0 is off.
    config.augment_scale = 0.0
    # Elastic distortion of training images (Simard et al. 2003): a smooth random field
    # of displacements, this strength their alpha (34 moves pixels by 1.4 rms); 0 is off.
    config.augment_elastic = 0.0
    # Probability of erasing a random rectangle (2-25 % of the image) of each training image.
    config.augment_erase = 0.0
    # MixUp: each training image and its target blended with another's, the weight drawn
    # from Beta(alpha, alpha); 0 is off.
    config.mixup_alpha = 0.0
    # CutMix: a box of another training image pasted in, the targets mixed by its share of
    # the pixels, its area from Beta(alpha, alpha); 0 is off. With MixUp too, each batch
    # takes one of the two at random.
    config.cutmix_alpha = 0.0
    # Decay of an exponential moving average of the parameters, kept in the optimiser state;
    # evaluation (and checkpoints' predictions) use the average. 0 keeps none.
    config.ema_decay = 0.0
    # Data parallelism: "auto" (shard_map on several devices, none on one), "none", "pmap",
    # "shard_map".
    config.parallel = "auto"
    # Devices to train on; 0 uses every device (several hosts always use all).
    config.num_devices = 0
    # Save a checkpoint every this many epochs (the last epoch is always saved).
    config.checkpoint_every_epochs = 1
    # Checkpoints kept on disk.
    config.keep_checkpoints = 3
    # Write a jax.profiler trace of this epoch into WORKDIR/plugins/profile (TensorBoard's
    # profile plugin or Perfetto show it); 0 traces nothing.
    config.trace_epoch = 0
    return config


def load_experiment(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config of the experiment file at `path`: its `get_config()`, as `--config=PATH`
    gives it to `mlp_jax.main` (for files outside the `experiments` package too)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _check(condition: bool, key: str, value, requirement: str) -> None:
    if not condition:
        raise UserError(f"config.{key}={value!r} is invalid: {requirement}")


def validate(config: ml_collections.ConfigDict, model_fields: frozenset[str]) -> None:
    """Checks every field before anything is compiled.

    Args:
      config: the resolved config.
      model_fields: the attribute names of the config's model; any other key the base
        config lacks is unknown.

    Raises:
      UserError: naming the first bad or unknown key and what it must be.
    """
    known = set(base_config().keys()) | model_fields
    unknown = sorted(set(config.keys()) - known)
    if unknown:
        raise UserError(
            f"unknown config key {unknown[0]!r}{closest(unknown[0], known)} (known: "
            f"{', '.join(sorted(known))}); fix the experiment file or the --config.KEY override"
        )
    _check(config.lr > 0, "lr", config.lr, "must be > 0")
    _check(config.batch_size >= 1, "batch_size", config.batch_size, "must be >= 1")
    _check(config.eval_batch_size >= 1, "eval_batch_size", config.eval_batch_size, "must be >= 1")
    _check(config.num_epochs >= 0, "num_epochs", config.num_epochs, "must be >= 0")
    _check(config.validation_size >= 0, "validation_size", config.validation_size, "must be >= 0")
    _check(config.warmup_epochs >= 0, "warmup_epochs", config.warmup_epochs, "must be >= 0")
    _check(config.weight_decay >= 0, "weight_decay", config.weight_decay, "must be >= 0")
    _check(
        0 <= config.label_smoothing < 1,
        "label_smoothing",
        config.label_smoothing,
        "must be in [0, 1)",
    )
    _check(0 <= config.augment_shift <= 8, "augment_shift", config.augment_shift, "must be in 0..8")
    _check(
        0 <= config.augment_rotate <= 180,
        "augment_rotate",
        config.augment_rotate,
        "must be in [0, 180] (degrees)",
    )
    _check(
        0 <= config.augment_scale < 1, "augment_scale", config.augment_scale, "must be in [0, 1)"
    )
    _check(config.augment_elastic >= 0, "augment_elastic", config.augment_elastic, "must be >= 0")
    _check(
        0 <= config.augment_erase <= 1, "augment_erase", config.augment_erase, "must be in [0, 1]"
    )
    _check(config.mixup_alpha >= 0, "mixup_alpha", config.mixup_alpha, "must be >= 0")
    _check(config.cutmix_alpha >= 0, "cutmix_alpha", config.cutmix_alpha, "must be >= 0")
    _check(0 <= config.ema_decay < 1, "ema_decay", config.ema_decay, "must be in [0, 1)")
    _check(
        config.compute_dtype in COMPUTE_DTYPES,
        "compute_dtype",
        config.compute_dtype,
        f"one of {COMPUTE_DTYPES}",
    )
    _check(config.optimizer in OPTIMIZERS, "optimizer", config.optimizer, f"one of {OPTIMIZERS}")
    _check(config.schedule in SCHEDULES, "schedule", config.schedule, f"one of {SCHEDULES}")
    _check(
        config.parallel in PARALLEL_MODES, "parallel", config.parallel, f"one of {PARALLEL_MODES}"
    )
    _check(
        config.checkpoint_every_epochs >= 1,
        "checkpoint_every_epochs",
        config.checkpoint_every_epochs,
        "must be >= 1",
    )
    _check(config.num_devices >= 0, "num_devices", config.num_devices, "must be >= 0")
    _check(
        config.keep_checkpoints >= 1, "keep_checkpoints", config.keep_checkpoints, "must be >= 1"
    )
    _check(config.trace_epoch >= 0, "trace_epoch", config.trace_epoch, "must be >= 0")
    for key in ("num_hiddens", "num_layers"):
        if key in config:
            _check(config[key] >= 1, key, config[key], "must be >= 1")
    if "dropout" in config:
        _check(0 <= config.dropout < 1, "dropout", config.dropout, "must be in [0, 1)")
    if "norm" in config:
        _check(config.norm in NORMS, "norm", config.norm, f"one of {NORMS}")
