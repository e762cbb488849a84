"""The library's configuration fields, their defaults, and their validation.

Experiment files (`experiments/*.py`) start from `base_config()`, name their model and set
their own fields; the library reads the model's hyperparameters from the config fields that
share the model's attribute names (see `mlp_jax.models.build_model`). The fields that shape
the compiled epoch are declared once, in `EpochOptions`, and reach the epoch as one frozen,
hashable object built from the config by `EpochOptions.from_config`.

`python -m mlp_jax.config EXPERIMENT.py ...` prints the reference of every field
(docs/config.md), read from the comments here and in the experiment files, so it cannot drift.
"""

import dataclasses
import hashlib
import importlib.util
import math
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import ml_collections
from ml_collections import config_flags

from mlp_jax import files
from mlp_jax.errors import UserError, closest

PARALLEL_MODES = ("auto", "none", "pmap", "shard_map")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
COMPUTE_DTYPES = ("float32", "bfloat16")
NORMS = ("none", "layer")


@dataclasses.dataclass(frozen=True)
class EpochOptions:
    """The settings of the compiled epoch that a config chooses: static (each value makes
    its own program), hashable, and passed to `mlp_jax.steps.train_epoch` whole. Each field
    is also a config field of the same name and default (see `base_config`)."""

    # Global minibatch size (split across devices when training data-parallel).
    batch_size: int = 256
    # Label smoothing of the cross-entropy target; 0 is d2l's loss.
    label_smoothing: float = 0.0
    # Dtype of the model's arithmetic: "float32" (the chapter's) or "bfloat16" (mixed
    # precision: parameters, optimiser state, loss and softmax stay float32; the matrix
    # products take bfloat16 operands and accumulate in float32).
    compute_dtype: str = "float32"
    # Random translation of training images by up to this many pixels each way; 0 is off.
    augment_shift: int = 0
    # Random horizontal flips of training images.
    augment_flip: bool = False
    # Random rotation of training images by up to this many degrees each way; 0 is off.
    augment_rotate: float = 0.0
    # Random scaling of training images by a factor in [1 - s, 1 + s]; 0 is off.
    augment_scale: float = 0.0
    # Elastic distortion of training images (Simard et al. 2003): a smooth random field
    # of displacements, this strength their alpha (34 moves pixels by 1.4 rms); 0 is off.
    augment_elastic: float = 0.0
    # Probability of erasing a random rectangle (2-25 % of the image) of each training image.
    augment_erase: float = 0.0
    # MixUp: each training image and its target blended with another's, the weight drawn
    # from Beta(alpha, alpha); 0 is off.
    mixup_alpha: float = 0.0
    # CutMix: a box of another training image pasted in, the targets mixed by its share of
    # the pixels, its area from Beta(alpha, alpha); 0 is off. With MixUp too, each batch
    # takes one of the two at random.
    cutmix_alpha: float = 0.0
    # Steps of the epoch's `lax.scan` unrolled into each loop iteration: fewer loop
    # iterations (and launches, on a GPU) for a larger program; the same arithmetic per step.
    scan_unroll: int = 1

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "EpochOptions":
        """The epoch's options as `config` sets them (the one place they are read)."""
        return cls(**{field.name: config[field.name] for field in dataclasses.fields(cls)})


def base_config() -> ml_collections.ConfigDict:
    """The training fields every experiment has, with d2l's chapter 5.2 values."""
    config = ml_collections.ConfigDict()
    # The model to train: "PATH.py:ClassName" (a file, looked up as `mlp_jax.files.find_file`
    # does) or "package.module:ClassName" (an importable module).
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
    # Decay of an exponential moving average of the parameters, kept in the optimiser state;
    # evaluation (and checkpoints' predictions) use the average. 0 keeps none.
    config.ema_decay = 0.0
    for field in dataclasses.fields(EpochOptions):
        config[field.name] = field.default
    # Members of a population with one seed (so one data order) share each batch: it is
    # gathered once and enters `jax.vmap` unbatched, so a layer's product with it is one wide
    # product for all of them; the same results, to float rounding. False: each member
    # gathers its own.
    config.share_data_order = True
    # Data parallelism: "auto" (shard_map on several devices, none on one), "none", "pmap",
    # "shard_map".
    config.parallel = "auto"
    # Devices to train on; 0 uses every device (several hosts always use all).
    config.num_devices = 0
    # Epochs run as one compiled program, each with its validation, the host acting only
    # between programs: a program also ends where a checkpoint is due, at the traced epoch and
    # at the end, and a stop request (SIGTERM, Ctrl-C) is honoured when the program in flight
    # ends. Fewer launches and host syncs (on a GPU); the same results. Every epoch's
    # train_seconds is its share of its program's time, its validation included (with 1 too).
    config.epochs_per_program = 1
    # Save a checkpoint every this many epochs (the last epoch is always saved).
    config.checkpoint_every_epochs = 1
    # Checkpoints kept on disk.
    config.keep_checkpoints = 3
    # Write a jax.profiler trace of this epoch into WORKDIR/plugins/profile (TensorBoard's
    # profile plugin or Perfetto show it); 0 traces nothing.
    config.trace_epoch = 0
    return config


# Fields that only a single run (`mlp_jax.train`) reads: populations (sweeps, searches) train
# on every device, keep no checkpoints and trace nothing, so these never change their results.
SINGLE_RUN_FIELDS = frozenset(
    {
        "parallel",
        "num_devices",
        "epochs_per_program",
        "checkpoint_every_epochs",
        "keep_checkpoints",
        "trace_epoch",
    }
)
# Fields that only populations read: how they run, never which models they train.
POPULATION_FIELDS = frozenset({"share_data_order"})


_LOADED_FILES: dict[Path, ModuleType] = {}


def load_module(path: str | os.PathLike) -> ModuleType:
    """The Python file at `path` (found as `mlp_jax.files.find_file` finds it) as a module,
    executed once per file, so that every config naming it gets the same classes (and jit's
    caches, keyed by them, hit).

    Raises:
      UserError: no such file.
    """
    resolved = files.find_file(path).resolve()
    if resolved not in _LOADED_FILES:
        digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
        name = f"mlp_jax_files.{resolved.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(name, resolved)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # Dataclasses (Flax modules) look their module up there.
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]  # A file that failed is loaded afresh next time.
            raise
        _LOADED_FILES[resolved] = module
    return _LOADED_FILES[resolved]


def load_experiment(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config of the experiment file at `path` (found as `mlp_jax.files.find_file`
    finds it): its `get_config()`, as `--config=PATH` gives it to `mlp_jax.main`.

    Raises:
      UserError: no such file, or it has no `get_config`.
    """
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise UserError(f"{module.__file__}: defines no get_config(); an experiment file must")
    return module.get_config()


def check_base_fields(config, source: str = "the config") -> None:
    """Refuses what is not an experiment config: not a ConfigDict, or one without the fields
    of `base_config()` (a `get_config` that built its own from scratch).

    Args:
      config: what a get_config() returned.
      source: where it came from, for the message (e.g. its file).

    Raises:
      UserError: naming the source, what is wrong and the fix.
    """
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(
            f"{source} is a {type(config).__name__}, not an ml_collections.ConfigDict; "
            "get_config() must return mlp_jax.config.base_config() with its fields set"
        )
    missing = sorted(set(base_config().keys()) - set(config.keys()))
    if missing:
        raise UserError(
            f"{source} lacks the field {missing[0]!r}"
            f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''} of "
            "mlp_jax.config.base_config(); start get_config() from base_config()"
        )


def require_fields(config, fields: tuple[str, ...], kind: str, source: str) -> None:
    """Refuses a config that lacks the fields a command needs (an exercise's, a search's),
    naming the first missing one and the kind of file expected."""
    missing = [
        f for f in fields if not isinstance(config, ml_collections.ConfigDict) or f not in config
    ]
    if missing:
        raise UserError(f"{source} is not {kind}: it lacks the field {missing[0]!r}")


def flag_config(flag, example: str, kind: str = "", fields: tuple[str, ...] = ()):
    """The config a `--config=FILE` flag loaded, refused in one line when it cannot serve:
    the flag missing, the file unreadable, or not of the kind the command needs.

    Args:
      flag: the flag's holder, e.g. `absl.flags.FLAGS["config"]`.
      example: a file of the right kind, for the messages.
      kind: what the command needs (e.g. "an exercise file"); with `fields` empty, an
        experiment config (the base fields) is needed.
      fields: the fields that kind of file has.

    Raises:
      UserError: naming the flag or the file, and the fix.
    """
    if not flag.present:
        raise UserError(f"--config is required, e.g. --config={example}")
    path = config_flags.get_config_filename(flag)
    config = flag.value
    try:
        config.get("model")  # ml_collections defers some load errors to first use.
    except OSError as e:
        reason = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
        raise UserError(f"--config={path} could not be loaded: {reason}") from None
    except AttributeError:  # Not a mapping at all: the checks below name what it is.
        pass
    if fields:
        require_fields(config, fields, f"{kind} (e.g. {example})", path)
    else:
        check_base_fields(config, f"{path}: its get_config()")
    return config


# Seeds become JAX keys (uint32 words) and numpy generators: whole numbers in this range.
MAX_SEED = 2**32 - 1


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
    check_base_fields(config)
    known = set(base_config().keys()) | model_fields
    unknown = sorted(set(config.keys()) - known)
    if unknown:
        raise UserError(
            f"unknown config key {unknown[0]!r}{closest(unknown[0], known)} (known: "
            f"{', '.join(sorted(known))}); fix the experiment file or the --config.KEY override"
        )
    for key, value in config.items():  # NaN and infinity pass every comparison below.
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"config.{key}={value} is invalid: must be a finite number")
    for key in ("seed", "split_seed"):
        _check(
            isinstance(config[key], int) and 0 <= config[key] <= MAX_SEED,
            key,
            config[key],
            f"must be a whole number in 0..{MAX_SEED}",
        )
    _check(config.lr > 0, "lr", config.lr, "must be > 0")
    _check(config.batch_size >= 1, "batch_size", config.batch_size, "must be >= 1")
    _check(config.scan_unroll >= 1, "scan_unroll", config.scan_unroll, "must be >= 1")
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
    _check(
        0 <= config.trace_epoch <= config.num_epochs,
        "trace_epoch",
        config.trace_epoch,
        f"must be in 0..num_epochs ({config.num_epochs}); 0 traces nothing",
    )
    _check(
        config.epochs_per_program >= 1,
        "epochs_per_program",
        config.epochs_per_program,
        "must be >= 1",
    )
    for key in ("num_hiddens", "num_layers"):
        if key in config:
            _check(config[key] >= 1, key, config[key], "must be >= 1")
    if "dropout" in config:
        _check(0 <= config.dropout < 1, "dropout", config.dropout, "must be in [0, 1)")
    if "norm" in config:
        _check(config.norm in NORMS, "norm", config.norm, f"one of {NORMS}")


# A field's line in a config source: `config.NAME = VALUE` (a get_config) or
# `NAME: TYPE = VALUE` (EpochOptions), each after the comment lines that explain it.
_FIELD_LINE = re.compile(r"^\s*(?:config\.(\w+)|(\w+): [\w.| ]+) = (.+)$")


def documented_fields(source: str) -> dict[str, tuple[str, str]]:
    """{name: (default as written, the comment above it)} of every field set in `source`
    under a comment; a field set again keeps its first comment."""
    fields, comment = {}, []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD_LINE.match(line)
        if match and comment:
            name = match.group(1) or match.group(2)
            fields.setdefault(name, (match.group(3).strip(), " ".join(comment)))
        comment = []
    return fields


def reference_markdown(experiment_files: list[str]) -> str:
    """docs/config.md: every field of the base config and of the experiments' models, its
    default, what it means, and which commands honour it."""
    base = documented_fields(Path(__file__).read_text())
    lines = [
        "# Config fields",
        "",
        "Generated by `make docs` (`python -m mlp_jax.config "
        + " ".join(experiment_files)
        + "`) from the comments in `mlp_jax/config.py` and the experiment files; "
        "`--config.KEY=VALUE` overrides any of them. *run* is a single run (`make train`, "
        "`python -m mlp_jax.main`); *populations* are the sweeps and searches "
        "(`mlp_jax.sweep`), which train on every device and keep no checkpoints.",
        "",
        "| field | default | honoured by | meaning |",
        "|---|---|---|---|",
    ]
    for name in base_config():
        default, meaning = base[name]
        where = (
            "run"
            if name in SINGLE_RUN_FIELDS
            else "populations"
            if name in POPULATION_FIELDS
            else "run, populations"
        )
        lines.append(f"| `{name}` | `{default}` | {where} | {_escape(meaning)} |")
    for experiment in experiment_files:
        model_fields = documented_fields(files.find_file(experiment).read_text())
        extra = {k: v for k, v in model_fields.items() if k not in base and k != "model"}
        lines += ["", f"## The model fields of `{experiment}`", ""]
        lines += ["| field | default | meaning |", "|---|---|---|"]
        lines += [f"| `{k}` | `{d}` | {_escape(m)} |" for k, (d, m) in extra.items()]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    print(reference_markdown(sys.argv[1:]), end="")
