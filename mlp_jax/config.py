"""The library's configuration fields, each declared once, and their validation.

Every field is one `Field`: its default, what it means, the check its value must pass, and
its roles (which commands read it, whether a resumed run may change it, whether members of
one population may differ in it, whether it sets how much memory a run needs). The sets of
field names the rest of the library needs (what a resume may change, what groups a
population, what a cache key leaves out) are derived from these declarations by `names`,
and so are `base_config`, `EpochOptions`, `validate` and docs/config.md
(`python -m mlp_jax.config EXPERIMENT.py ...`).

Experiment files (`experiments/*.py`) start from `base_config()`, name their model and set
its hyperparameters: the config fields that share the model's attribute names (see
`mlp_jax.models.build_model`). The hyperparameters of the experiments' MLPs are declared here
(`MODEL_FIELDS`), since the library's mechanisms read them; an experiment whose model has
another declares it with `declare`. A field nobody declared is read by every command, fixed
on resume, shared within a population and checked by no one.
"""

import contextlib
import dataclasses
import hashlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections
from ml_collections import config_flags

from mlp_jax import errors, files
from mlp_jax.errors import UserError, closest

PARALLEL_MODES = ("auto", "none", "pmap", "shard_map")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
COMPUTE_DTYPES = ("float32", "bfloat16")
NORMS = ("none", "layer")
# Seeds become JAX keys (uint32 words) and numpy generators: whole numbers in this range.
MAX_SEED = 2**32 - 1
# Any other whole number (a size, a count) must fit JAX's 32-bit integers: a larger one
# failed inside XLA with a traceback, or ran out of memory after JAX's int64 warnings.
MAX_WHOLE = 2**31 - 1
# The run plans its programs epoch by epoch (`loop.program_plan`): a billion epochs took the
# machine's memory before the first one. A million is days of the largest runs here.
MAX_EPOCHS = 10**6

# The commands that read a field: a single run (`make train`, `python -m mlp_jax.main`) and
# populations (the sweeps and searches of `mlp_jax.sweep`, which train on every device, keep
# no checkpoints and trace nothing). A field only populations read says how they run, never
# which models they train.
RUN, POPULATIONS = "run", "populations"
# Whether a run resumed from a workdir's checkpoints may change a field: FIXED (the results
# or the shapes would change), FREE, or FREE_IF_CONSTANT (free unless a schedule spans it).
FIXED, FREE, FREE_IF_CONSTANT = "fixed", "free", "free with schedule='constant'"
# Whether the members of one population (one compiled program) may differ in a field:
# SHARED (it shapes the program) or PER_MEMBER (a number inside each member's train state).
SHARED, PER_MEMBER = "shared", "per member"
# What a field sizes in device memory: the parameters (and so the optimiser state and the
# gradients), or a batch's activations.
PARAMETERS, ACTIVATIONS = "parameters", "activations"


@dataclasses.dataclass(frozen=True)
class Check:
    """What a field's value must be: `holds(value, config)` and, for messages and the
    reference page, the requirement in words, where "{name}" stands for another field's
    value (e.g. "must be in 0..{num_epochs}")."""

    holds: Callable[[Any, ml_collections.ConfigDict], bool] = dataclasses.field(compare=False)
    requirement: str
    # Whether a whole number may exceed MAX_WHOLE (a seed's range is its own).
    wide: bool = False

    def words(self, config: ml_collections.ConfigDict | None = None) -> str:
        """The requirement with the other fields' values in `config` (their names without)."""
        return self.requirement.format_map(config if config is not None else _FieldNames())


class _FieldNames(dict):
    def __missing__(self, name: str) -> str:
        return name


def at_least(low, strictly: bool = False) -> Check:
    """A number >= `low` (> with `strictly`)."""
    if strictly:
        return Check(lambda value, _: value > low, f"must be > {low}")
    return Check(lambda value, _: value >= low, f"must be >= {low}")


def within(low, high, *, below_high: bool = False, whole: bool = False, unit: str = "") -> Check:
    """A number in [low, high] ([low, high) with `below_high`; "low..high" if `whole`)."""
    if below_high:
        return Check(lambda value, _: low <= value < high, f"must be in [{low}, {high}){unit}")
    text = f"{low}..{high}" if whole else f"[{low}, {high}]"
    return Check(lambda value, _: low <= value <= high, f"must be in {text}{unit}")


def one_of(choices: tuple[str, ...]) -> Check:
    """One of `choices`."""
    return Check(lambda value, _: value in choices, f"one of {choices}")


FLOAT32_MAX = 3.4028234663852886e38  # The largest float32: the parameters' dtype.

SEED_CHECK = Check(
    lambda value, _: isinstance(value, int) and 0 <= value <= MAX_SEED,
    f"must be a whole number in 0..{MAX_SEED}",
    wide=True,
)


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field, declared once.

    Attributes:
      name: the config key.
      default: its value in `base_config()` (for a model's field, the usual one).
      meaning: what it does, in a sentence or two (docs/config.md shows it).
      check: what its value must be; None checks only that a float is finite.
      read_by: the commands that read it (RUN, POPULATIONS or both).
      on_resume: FIXED, FREE or FREE_IF_CONSTANT: may a resumed run change it?
      in_population: SHARED or PER_MEMBER: may one population's members differ in it? Only
        a field read at initialisation (each member is initialised by its own model) or
        held in the train state (the learning rate) can be PER_MEMBER: the members share
        the first one's apply function and optimiser (`mlp_jax.sweep.stack_states`).
      sizes: PARAMETERS or ACTIVATIONS where it sets how much device memory a run needs.
      shown: named in a population's progress line.
      epoch_option: a static setting of the compiled epoch (a field of `EpochOptions`).
      local: says where, on this machine, not what is trained: kept out of records.
    """

    name: str
    default: Any
    meaning: str
    check: Check | None = None
    read_by: tuple[str, ...] = (RUN, POPULATIONS)
    on_resume: str = FIXED
    in_population: str = SHARED
    sizes: str = ""
    shown: bool = False
    epoch_option: bool = False
    local: bool = False

    def run_only(self) -> bool:
        """Read by single runs alone, never by a population (e.g. `num_devices`)."""
        return self.read_by == (RUN,)

    def population_only(self) -> bool:
        """Read by populations alone, never by a single run (e.g. `share_data_order`)."""
        return self.read_by == (POPULATIONS,)

    def may_change_on_resume(self, config: ml_collections.ConfigDict) -> bool:
        """Whether a run resumed with `config` may hold another value of this field."""
        return self.on_resume == FREE or (
            self.on_resume == FREE_IF_CONSTANT and config.schedule == "constant"
        )


_RUN_ONLY = {"read_by": (RUN,), "on_resume": FREE}
_NEVER_NEGATIVE, _POSITIVE = at_least(0), at_least(1)

BASE_FIELDS = (
    Field(
        "model",
        "",
        'The model to train: "PATH.py:ClassName" (a file, looked up as '
        '`mlp_jax.files.find_file` does) or "package.module:ClassName" (an importable module).',
    ),
    Field(
        "data_dir",
        "",
        'Folder with the four Fashion-MNIST IDX files; "" searches $FASHION_MNIST_DIR, then '
        "/usr/share/datasets/fashion-mnist, then TFDS. A resume may find the same files "
        "elsewhere, not other data.",
        on_resume=FREE,
        local=True,
    ),
    Field(
        "validation_size",
        0,
        "Training images held out to validate on; 0 validates on the test split, as d2l does.",
        _NEVER_NEGATIVE,
    ),
    Field(
        "split_seed",
        0,
        "Seed of the permutation that chooses the held-out validation images.",
        SEED_CHECK,
    ),
    Field(
        "seed",
        0,
        "Seed of parameter initialisation, data order and dropout.",
        SEED_CHECK,
        in_population=PER_MEMBER,
    ),
    Field(
        "num_epochs",
        10,
        "Passes over the training split.",
        within(0, MAX_EPOCHS, whole=True),
        on_resume=FREE_IF_CONSTANT,
    ),
    Field(
        "eval_batch_size",
        2000,
        "Examples per evaluation chunk; it changes memory, not results.",
        _POSITIVE,
        on_resume=FREE,
        sizes=ACTIVATIONS,
    ),
    Field("optimizer", "sgd", "Optimiser (d2l uses plain SGD).", one_of(OPTIMIZERS)),
    Field("lr", 0.1, "Peak learning rate.", at_least(0, strictly=True), in_population=PER_MEMBER),
    Field(
        "momentum",
        0.9,
        'Momentum for "momentum"; b1 for adam/adamw.',
        # Not where plain SGD never reads it: a run saved so stays readable.
        Check(
            lambda value, config: config.optimizer == "sgd" or 0 <= value < 1,
            'must be in [0, 1) (but for optimizer "sgd")',
        ),
    ),
    Field(
        "weight_decay",
        0.0,
        'Decoupled weight decay for "adamw", L2-style decay for the others; 0 disables it.',
        _NEVER_NEGATIVE,
    ),
    Field("schedule", "constant", "Learning-rate schedule.", one_of(SCHEDULES)),
    Field(
        "warmup_epochs",
        0,
        "Epochs of linear warm-up before the schedule.",
        within(0, MAX_EPOCHS, whole=True),
    ),
    Field(
        "ema_decay",
        0.0,
        "Decay of an exponential moving average of the parameters, kept in the optimiser "
        "state; evaluation (and checkpoints' predictions) use the average. 0 keeps none.",
        within(0, 1, below_high=True),
    ),
    Field(
        "batch_size",
        256,
        "Global minibatch size (split across devices when training data-parallel).",
        _POSITIVE,
        sizes=ACTIVATIONS,
        shown=True,
        epoch_option=True,
    ),
    Field(
        "label_smoothing",
        0.0,
        "Label smoothing of the cross-entropy target; 0 is d2l's loss.",
        within(0, 1, below_high=True),
        epoch_option=True,
    ),
    Field(
        "compute_dtype",
        "float32",
        'Dtype of the model\'s arithmetic: "float32" (the chapter\'s) or "bfloat16" (mixed '
        "precision: parameters, optimiser state, loss and softmax stay float32; the matrix "
        "products take bfloat16 operands and accumulate in float32).",
        one_of(COMPUTE_DTYPES),
        epoch_option=True,
    ),
    Field(
        "augment_shift",
        0,
        "Random translation of training images by up to this many pixels each way; 0 is off.",
        within(0, 8, whole=True),
        epoch_option=True,
    ),
    Field("augment_flip", False, "Random horizontal flips of training images.", epoch_option=True),
    Field(
        "augment_rotate",
        0.0,
        "Random rotation of training images by up to this many degrees each way; 0 is off.",
        within(0, 180, unit=" (degrees)"),
        epoch_option=True,
    ),
    Field(
        "augment_scale",
        0.0,
        "Random scaling of training images by a factor in [1 - s, 1 + s]; 0 is off.",
        within(0, 1, below_high=True),
        epoch_option=True,
    ),
    Field(
        "augment_elastic",
        0.0,
        "Elastic distortion of training images (Simard et al. 2003): a smooth random field of "
        "displacements, this strength their alpha (34 moves pixels by 1.4 rms); 0 is off.",
        _NEVER_NEGATIVE,
        epoch_option=True,
    ),
    Field(
        "augment_erase",
        0.0,
        "Probability of erasing a random rectangle (2-25 % of the image) of each training image.",
        within(0, 1),
        epoch_option=True,
    ),
    Field(
        "mixup_alpha",
        0.0,
        "MixUp: each training image and its target blended with another's, the weight drawn "
        "from Beta(alpha, alpha); 0 is off.",
        _NEVER_NEGATIVE,
        epoch_option=True,
    ),
    Field(
        "cutmix_alpha",
        0.0,
        "CutMix: a box of another training image pasted in, the targets mixed by its share of "
        "the pixels, its area from Beta(alpha, alpha); 0 is off. With MixUp too, each batch "
        "takes one of the two at random.",
        _NEVER_NEGATIVE,
        epoch_option=True,
    ),
    Field(
        "scan_unroll",
        1,
        "Steps of the epoch's `lax.scan` unrolled into each loop iteration: fewer loop "
        "iterations (and launches, on a GPU) for a larger program; the same arithmetic per "
        "step.",
        _POSITIVE,
        on_resume=FREE,  # The same arithmetic per step (tests/unit/loop_test.py).
        epoch_option=True,
    ),
    Field(
        "share_data_order",
        True,
        "Members of a population with one seed (so one data order) share each batch: it is "
        "gathered once and enters `jax.vmap` unbatched, so a layer's product with it is one "
        "wide product for all of them; the same results, to float rounding. False: each "
        "member gathers its own.",
        read_by=(POPULATIONS,),
        on_resume=FREE,
    ),
    Field(
        "parallel",
        "auto",
        'Data parallelism: "auto" (shard_map on several devices, none on one), "none", '
        '"pmap", "shard_map".',
        one_of(PARALLEL_MODES),
        **_RUN_ONLY,
    ),
    Field(
        "num_devices",
        0,
        "Devices to train on; 0 uses every device (several hosts always use all).",
        _NEVER_NEGATIVE,
        **_RUN_ONLY,
    ),
    Field(
        "epochs_per_program",
        1,
        "Epochs run as one compiled program, each with its validation, the host acting only "
        "between programs: a program also ends where a checkpoint is due, at the traced epoch "
        "and at the end, and a stop request (SIGTERM, Ctrl-C) is honoured when the program in "
        "flight ends. Fewer launches and host syncs (on a GPU); the same results. Every "
        "epoch's train_seconds is its share of its program's time, its validation included "
        "(with 1 too).",
        _POSITIVE,
        **_RUN_ONLY,
    ),
    Field(
        "checkpoint_every_epochs",
        1,
        "Save a checkpoint every this many epochs (the last epoch is always saved).",
        _POSITIVE,
        **_RUN_ONLY,
    ),
    Field("keep_checkpoints", 3, "Checkpoints kept on disk.", _POSITIVE, **_RUN_ONLY),
    Field(
        "trace_epoch",
        0,
        "Write a jax.profiler trace of this epoch into WORKDIR/plugins/profile (TensorBoard's "
        "profile plugin or Perfetto show it); 0 traces nothing.",
        Check(
            lambda value, config: 0 <= value <= config.num_epochs,
            "must be in 0..{num_epochs}; 0 traces nothing",
        ),
        **_RUN_ONLY,
    ),
)

# The hyperparameters of the experiments' MLPs (experiments/mlp_*.py), which the library's
# mechanisms read: their sizes for memory, their initialisers as per-member values.
MODEL_FIELDS = (
    Field(
        "num_inputs",
        784,
        "Input features: Fashion-MNIST's 28 x 28 pixels; fixed by the data, so no experiment's "
        "config holds it (a model's constructor argument, as in d2l).",
        _POSITIVE,
    ),
    Field(
        "num_hiddens",
        256,
        "Hidden units per hidden layer.",
        _POSITIVE,
        sizes=PARAMETERS,
        shown=True,
    ),
    Field("num_outputs", 10, "Output classes.", _POSITIVE),
    Field("num_layers", 1, "Hidden layers.", _POSITIVE, sizes=PARAMETERS, shown=True),
    Field(
        "activation",
        "relu",
        'Hidden activation (see mlp_jax.models.ACTIVATIONS); the scratch model\'s "relu" is '
        "its hand-written max(x, 0).",
        shown=True,
    ),
    Field(
        "weight_init",
        "normal",
        "Weight initialiser (see mlp_jax.models.INITIALIZERS); biases start at zero.",
        in_population=PER_MEMBER,
    ),
    Field(
        "init_scale",
        0.01,
        'Standard deviation of the "normal" initialiser (d2l: 0.01).',
        # Past a float32's largest it overflowed as it was cast, and the run was said to
        # diverge for its lr (trial 10).
        Check(lambda value, _: 0 <= value <= FLOAT32_MAX, "must be in [0, 3.4e38] (a float32)"),
        in_population=PER_MEMBER,
    ),
    Field(
        "dropout",
        0.0,
        "Dropout rate after each hidden layer; the chapter has none.",
        within(0, 1, below_high=True),
    ),
    Field(
        "norm",
        "none",
        'Normalisation of each hidden layer before its activation: "none" or "layer".',
        one_of(NORMS),
    ),
    Field(
        "residual",
        False,
        "Skip connections around the hidden layers after the first (all of width num_hiddens).",
    ),
)

_DECLARED: dict[str, Field] = {field.name: field for field in (*BASE_FIELDS, *MODEL_FIELDS)}


def declare(*fields: Field) -> None:
    """Declares the fields of an experiment's model that `MODEL_FIELDS` lacks (call it at
    the top of the experiment file): their checks and roles then hold as the library's do.

    Raises:
      ValueError: a field of that name is declared otherwise already.
    """
    for field in fields:
        if _DECLARED.setdefault(field.name, field) != field:
            raise ValueError(f"config field {field.name!r} is declared twice, differently")


def declared(name: str) -> Field:
    """The declaration of field `name` (an undeclared one gets `Field`'s default roles)."""
    return _DECLARED.get(name) or Field(name, None, "")


def names(role: Callable[[Field], bool]) -> frozenset[str]:
    """The names of the declared fields that have `role`, e.g. `names(Field.run_only)`:
    the library's, and those of the experiment files this process has loaded (a file
    declares its fields when it is loaded, before any config of it is read)."""
    return frozenset(name for name, field in _DECLARED.items() if role(field))


def _from_config(cls, config: ml_collections.ConfigDict):
    """The epoch's options as `config` sets them (the one place they are read)."""
    return cls(**{field.name: config[field.name] for field in dataclasses.fields(cls)})


EpochOptions = dataclasses.make_dataclass(
    "EpochOptions",
    [(f.name, type(f.default), f.default) for f in BASE_FIELDS if f.epoch_option],
    frozen=True,
    namespace={"from_config": classmethod(_from_config), "__module__": __name__},
)
EpochOptions.__doc__ = """The settings of the compiled epoch that a config chooses: static (each
value makes its own program), hashable, and passed to `mlp_jax.steps.train_epoch` whole. Its
fields are the declared fields marked `epoch_option`, with their defaults;
`EpochOptions.from_config(config)` reads them from a config."""


def base_config() -> ml_collections.ConfigDict:
    """The training fields every experiment has, with d2l's chapter 5.2 values."""
    return ml_collections.ConfigDict({field.name: field.default for field in BASE_FIELDS})


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
            with _no_exit_from(resolved):
                spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]  # A file that failed is loaded afresh next time.
            raise
        _LOADED_FILES[resolved] = module
    return _LOADED_FILES[resolved]


@contextlib.contextmanager
def _no_exit_from(path: Path):
    """Refuses a user's file that ends the process (`sys.exit`) while it runs.

    Raises:
      UserError: naming the file.
    """
    try:
        yield
    except SystemExit as e:
        if not errors.ran_in(e, path):
            raise
        raise UserError(errors.exited_while_loading(path, e)) from None


def load_experiment(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config of the experiment file at `path` (found as `mlp_jax.files.find_file`
    finds it): its `get_config()`, as `--config=PATH` gives it to `mlp_jax.main`.

    Raises:
      UserError: no such file, or it has no `get_config`.
    """
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise UserError(f"{module.__file__}: defines no get_config(); an experiment file must")
    with _no_exit_from(Path(module.__file__)):
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
    if not path:  # As `make train CONFIG=` gives it: "Path to config file is an empty string".
        raise UserError(f"--config is empty; give an experiment file, e.g. --config={example}")
    config = flag.value
    try:
        config.get("model")  # ml_collections defers some load errors to first use.
    except OSError as e:
        if ":" in path and os.path.isfile(path):  # Its name, not the file, was the fault.
            raise UserError(
                f"--config={path}: ml_collections reads what follows a ':' as the argument of "
                f"get_config(), so it looked for {path.split(':', 1)[0]}; give it a path "
                "without ':'"
            ) from None
        reason = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
        raise UserError(f"--config={path} could not be loaded: {reason}") from None
    except AttributeError:  # Not a mapping at all: the checks below name what it is.
        pass
    if fields:
        require_fields(config, fields, f"{kind} (e.g. {example})", path)
    else:
        check_base_fields(config, f"{path}: its get_config()")
    return config


_KIND_WORDS = {bool: "True or False", int: "a whole number", float: "a number", str: "a string"}


def validate(config: ml_collections.ConfigDict, model_fields: frozenset[str]) -> None:
    """Checks every field before anything is compiled, each by its declared `Check`.

    Args:
      config: the resolved config.
      model_fields: the attribute names of the config's model; any other key the base
        config lacks is unknown.

    Raises:
      UserError: naming the first bad or unknown key and what it must be.
    """
    check_base_fields(config)
    known = {field.name for field in BASE_FIELDS} | model_fields
    unknown = sorted(set(config.keys()) - known)
    if unknown:
        raise UserError(
            f"unknown config key {unknown[0]!r}{closest(unknown[0], known)} (known: "
            f"{', '.join(sorted(known))}); fix the experiment file or the --config.KEY override"
        )
    for key, value in config.items():
        field = declared(key)
        check, kind = field.check, _kind(field.default)
        if kind is not None and not _is_a(value, kind):  # Type-safe from the command line,
            # not from a file: a workdir's config.json, an experiment's own ConfigDict.
            raise UserError(
                f"config.{key}={value!r} is invalid: must be {_KIND_WORDS[kind]}"
                + (f" of Python's: give {kind.__name__}(...) of it" if _is_numpy(value) else "")
            )
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes no comparison.
            raise UserError(f"config.{key}={value} is invalid: must be a finite number")
        if check is not None and not check.holds(value, config):
            raise UserError(f"config.{key}={value!r} is invalid: {check.words(config)}")
        if kind is int and abs(value) > MAX_WHOLE and not (check is not None and check.wide):
            raise UserError(f"config.{key}={value} is invalid: must be at most {MAX_WHOLE}")


def _is_numpy(value) -> bool:
    """Whether `value` is a numpy scalar or array (config.json could not hold it)."""
    return type(value).__module__ == "numpy"


def _kind(default) -> type | None:
    """The kind of value a field holds, as its default shows (None: any)."""
    return next((kind for kind in _KIND_WORDS if type(default) is kind), None)


def _is_a(value, kind: type) -> bool:
    """Whether `value` is of `kind` (a whole number is a number; a bool is no number)."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _roles(field: Field) -> list[str]:
    """A field's roles in words, for the reference page."""
    return [
        " + ".join(field.read_by),
        field.on_resume,
        field.in_population,
        field.sizes or "-",
    ]


def reference_markdown(experiment_files: list[str]) -> str:
    """docs/config.md: every declared field (default, check, roles, meaning), then the model
    fields each experiment sets and their values there."""
    lines = [
        "# Config fields",
        "",
        "Generated by `make docs` (`python -m mlp_jax.config "
        + " ".join(experiment_files)
        + "`) from the declarations in `mlp_jax/config.py`; `--config.KEY=VALUE` overrides any "
        "field. *read by*: a single run (*run*: `make train`, `python -m mlp_jax.main`) or the "
        "*populations* (the sweeps and searches of `mlp_jax.sweep`, which train on every "
        "device and keep no checkpoints). *on resume*: whether a run resumed from its "
        "checkpoints may change it. *in a population*: whether the members of one compiled "
        "population may differ in it. *sizes*: what it sets the memory of.",
        "",
    ]
    header = [
        "| field | default | check | read by | on resume | in a population | sizes | meaning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for title, fields in (
        ("Every experiment's fields", BASE_FIELDS),
        ("The MLPs' fields", MODEL_FIELDS),
    ):
        lines += [f"## {title}", "", *header]
        for field in fields:
            check = field.check.words() if field.check else "-"
            cells = [
                f"`{field.name}`",
                f"`{field.default!r}`",
                check,
                *_roles(field),
                field.meaning,
            ]
            lines.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
        lines.append("")
    for experiment in experiment_files:
        config = load_experiment(experiment)
        own = [key for key in config if key not in {field.name for field in BASE_FIELDS}]
        lines += [f"## The model of `{experiment}`", "", f"`{config.model}`:", ""]
        lines += ["| field | value |", "|---|---|"]
        lines += [f"| `{key}` | `{config[key]!r}` |" for key in own]
        lines.append("")
    return "\n".join(lines)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def main(experiment_files: list[str]) -> None:
    """Writes docs/config.md's text (`reference_markdown`) on stdout."""
    from mlp_jax import progress  # noqa: PLC0415  (it imports JAX, which validation needs not)

    progress.emit(reference_markdown(experiment_files).removesuffix("\n"))


if __name__ == "__main__":
    errors.run_command(main, arguments=True)
