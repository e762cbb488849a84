"""What the library needs to know of models: how to build one from a config, and the
activation functions and initialisers the experiments choose among by name.

The model classes themselves live in `experiments/`; the config names one by the path of its
file (or an importable module), so the library imports no experiment. A model is a Flax linen
module or a Flax NNX one: an NNX class is brought to the same contract through Flax's bridge
(`nnx.bridge.ToLinen`, which splits the NNX module into its graph and its parameters), so the
train step, populations, data parallelism and checkpoints see one pure function of the
parameters, whichever API wrote the model.
"""

import dataclasses
import functools
import importlib
import inspect
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax.core import FrozenDict

from mlp_jax import config as config_lib
from mlp_jax import dependencies
from mlp_jax.data import NUM_CLASSES, NUM_PIXELS
from mlp_jax.errors import UserError

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jax.nn.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "leaky_relu": jax.nn.leaky_relu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
}
# Weight initialisers by name; "normal" takes its standard deviation from `init_scale`.
INITIALIZERS = {
    "normal": nn.initializers.normal,
    "zeros": lambda _scale: nn.initializers.zeros,
    "glorot": lambda _scale: nn.initializers.glorot_uniform(),
    "he": lambda _scale: nn.initializers.he_normal(),
    "lecun": lambda _scale: nn.initializers.lecun_normal(),
}
# Module attributes that are not hyperparameters.
_FLAX_FIELDS = frozenset({"parent", "name"})


def activation_fn(name: str):
    """The activation function called `name` (a key of ACTIVATIONS)."""
    if name not in ACTIVATIONS:
        raise UserError(f"config.activation={name!r} is unknown; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def weight_initializer(name: str, scale: float):
    """The weight initialiser called `name`; `scale` is the standard deviation of "normal"."""
    if name not in INITIALIZERS:
        raise UserError(
            f"config.weight_init={name!r} is unknown; choose from {sorted(INITIALIZERS)}"
        )
    return INITIALIZERS[name](scale)


def check_named_choices(config: ml_collections.ConfigDict) -> None:
    """Refuses an `activation` or `weight_init` this library has no function of, before the
    model first runs (where the model reads them).

    Raises:
      UserError: naming the field and the choices.
    """
    if "activation" in config:
        activation_fn(config.activation)
    if "weight_init" in config:
        weight_initializer(config.weight_init, config.get("init_scale", 0.01))


# How config.model names a model class, for the lines that refuse one.
_MODEL_FORM = (
    "'PATH.py:ClassName' or 'package.module:ClassName', e.g. "
    "'experiments/mlp_scratch.py:MLPScratch'"
)


def model_class(config: ml_collections.ConfigDict) -> type:
    """The Flax module class (linen or NNX) `config.model` names: "PATH.py:ClassName" (a file,
    looked up from the current folder upwards) or "package.module:ClassName" (an importable
    module)."""
    named = config.get("model")
    location, _, class_name = named.partition(":") if isinstance(named, str) else ("", "", "")
    if not (location and class_name):
        raise UserError(f"config.model={named!r} names no model: give it as {_MODEL_FORM}")
    try:
        if location.endswith(".py"):
            module = config_lib.load_module(location)
        else:
            module = importlib.import_module(location)
    except UserError as e:
        raise UserError(f"config.model={config.model!r} cannot be loaded ({e})") from None
    except ModuleNotFoundError as e:
        if missing := dependencies.missing_line(e):
            raise UserError(f"config.model={config.model!r} cannot be loaded: {missing}") from None
        if not (location == e.name or location.startswith(f"{e.name}.")):
            raise UserError(
                f"config.model={config.model!r} cannot be loaded: {location} raised "
                f"{_one_line(e)}; install what it imports or fix that file"
            ) from None
        if "/" in location:  # A file's path without its .py.
            raise UserError(
                f"config.model={config.model!r} cannot be loaded: a file's path ends in .py "
                f"(e.g. '{location}.py:{class_name}'); {location} is no module's name"
            ) from None
        raise UserError(
            f"config.model={config.model!r} cannot be loaded: no module {location} is "
            f"installed ({_one_line(e)}); install its package, or give the model as "
            f"{_MODEL_FORM}"
        ) from None
    except Exception as e:  # noqa: BLE001  (the model's file runs; it may raise anything)
        raise UserError(
            f"config.model={config.model!r} cannot be loaded: {location} raised "
            f"{_one_line(e)}; fix that file"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise UserError(
            f"config.model={config.model!r} cannot be loaded: {location} defines no "
            f"{class_name!r}; give the model as {_MODEL_FORM}"
        )
    if not (isinstance(cls, type) and (issubclass(cls, nn.Module) or is_nnx(cls))):
        raise UserError(
            f"config.model={config.model!r} is not a Flax module class (flax.linen.Module "
            "or flax.nnx.Module)"
        )
    return cls


def is_nnx(cls: type) -> bool:
    """Whether a model class is written with Flax NNX (else linen). NNX is not imported for
    this (a tenth of a second at every start): an NNX class's file has imported it."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and issubclass(cls, nnx.Module)


def _nnx_parameters(cls: type) -> list[inspect.Parameter]:
    """The named parameters of an NNX class's constructor, less the `rngs` it is given."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p for p in parameters if p.kind in kinds and p.name != "rngs"]


def model_fields(cls: type) -> frozenset[str]:
    """The hyperparameter names of a model class: a linen module's dataclass fields, an NNX
    module's constructor arguments (less `rngs`)."""
    if is_nnx(cls):
        return frozenset(p.name for p in _nnx_parameters(cls))
    return frozenset(f.name for f in dataclasses.fields(cls)) - _FLAX_FIELDS


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Instantiates the config's model, taking each hyperparameter from the config field of
    the same name (fields the config lacks keep the class default). An NNX class comes back
    wrapped as a linen module (`nnx.bridge.ToLinen`) whose parameters are the NNX module's
    `nnx.Param`s, by their attribute paths.

    Raises:
      UserError: the class needs a field the config does not give.
    """
    cls = model_class(config)
    kwargs = {name: config[name] for name in model_fields(cls) if name in config}
    try:
        if is_nnx(cls):
            from flax.nnx import bridge  # noqa: PLC0415  (NNX models only)

            # Bound now, so a missing field is named here rather than at the first trace.
            inspect.signature(cls.__init__).bind(None, **kwargs, rngs=None)
            return bridge.ToLinen(cls, kwargs=FrozenDict(kwargs))
        return cls(**kwargs)
    except TypeError as e:  # A field without a default that the config does not set.
        raise UserError(
            f"config.model={config.model!r} cannot be built from the config ({_one_line(e)}); "
            "set each field it needs in the experiment file"
        ) from None


@functools.cache
def _logits_of(model: nn.Module, batch: int, train: bool) -> jax.ShapeDtypeStruct:
    """The shape and dtype of a model's output for `batch` images, traced, never computed:
    called as evaluation calls it (its parameters alone), or with the arguments the train
    step gives (`train=True`, a dropout key)."""
    images = jax.ShapeDtypeStruct((batch, NUM_PIXELS), jnp.float32)

    def logits(x):
        variables = model.init(jax.random.key(0), x)
        if not train:
            return model.apply({"params": variables["params"]}, x)
        return model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})

    return jax.eval_shape(logits, images)


# How the contract check calls a model: in evaluation and in training, on batches of two
# sizes (a model whose output kept 2 rows whatever the batch passed a check of one).
_CALLS = ((2, False, "in evaluation"), (3, True, "in training"))


def check_logits(model: nn.Module, config: ml_collections.ConfigDict) -> None:
    """Refuses, before anything compiles, a model that does not map a batch of flattened
    images (B, 784) to float logits (B, 10), the model's contract, in evaluation and in
    training, or that has no parameters to train.

    Raises:
      UserError: naming the model, what it gives or raises, and the fix.
    """
    name = f"config.model={config.model!r}"
    images = jax.ShapeDtypeStruct((2, NUM_PIXELS), jnp.float32)
    try:
        # The key made inside the trace: no transfer, even under a user's transfer guard.
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
        if not jax.tree.leaves(variables.get("params", {})):
            raise UserError(f"{name} has no parameters to train; give it a layer that has")
        results = [(_logits_of(model, batch, train), batch, when) for batch, train, when in _CALLS]
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001  (the model's own code runs; it may raise anything)
        raise UserError(
            f"{name} fails on a batch of images ({_one_line(e)}); fix the model or the config "
            "fields it reads"
        ) from None
    for logits, batch, when in results:
        shape, dtype = getattr(logits, "shape", None), getattr(logits, "dtype", None)
        floating = dtype is not None and jnp.issubdtype(dtype, jnp.floating)
        if shape == (batch, NUM_CLASSES) and floating:
            continue
        given = f"{dtype} logits of shape {shape}" if shape is not None else type(logits).__name__
        fix = "make it return one float logit per class"
        if config.get("num_outputs", NUM_CLASSES) != NUM_CLASSES:
            fix = f"set config.num_outputs={NUM_CLASSES} (it is {config.num_outputs})"
        raise UserError(
            f"{name} gives {given} for {batch} images {when}, where Fashion-MNIST's "
            f"{NUM_CLASSES} classes need float logits of shape ({batch}, {NUM_CLASSES}); {fix}"
        )


def resolve_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Validates the config against the library's and the model's fields; builds the model
    and checks its contract (`check_logits`)."""
    config_lib.check_base_fields(config)
    config_lib.validate(config, model_fields(model_class(config)))
    check_named_choices(config)
    model = build_model(config)
    check_logits(model, config)
    return model


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__
