"""What the library needs to know of models: how to build one from a config, and the
activation functions and initialisers the experiments choose among by name.

The model classes themselves live in `experiments/`; the config names one by the path of its
file (or an importable module), so the library imports no experiment.
"""

import dataclasses
import importlib

import flax.linen as nn
import jax
import ml_collections

from mlp_jax import config as config_lib
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


def model_class(config: ml_collections.ConfigDict) -> type[nn.Module]:
    """The Flax module class `config.model` names: "PATH.py:ClassName" (a file, looked up from
    the current folder upwards) or "package.module:ClassName" (an importable module)."""
    location, _, class_name = config.model.partition(":")
    try:
        if location.endswith(".py"):
            module = config_lib.load_module(location)
        else:
            module = importlib.import_module(location)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError, ValueError, UserError) as e:
        raise UserError(
            f"config.model={config.model!r} cannot be loaded ({e}); give it as "
            "'PATH.py:ClassName' or 'package.module:ClassName', e.g. "
            "'experiments/mlp_scratch.py:MLPScratch'"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UserError(f"config.model={config.model!r} is not a flax.linen.Module class")
    return cls


def model_fields(cls: type[nn.Module]) -> frozenset[str]:
    """The hyperparameter names of a model class: its dataclass fields."""
    return frozenset(f.name for f in dataclasses.fields(cls)) - _FLAX_FIELDS


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Instantiates the config's model, taking each hyperparameter from the config field of
    the same name (fields the config lacks keep the class default)."""
    cls = model_class(config)
    kwargs = {name: config[name] for name in model_fields(cls) if name in config}
    return cls(**kwargs)


def resolve_model(config: ml_collections.ConfigDict) -> nn.Module:
    """Validates the config against the library's and the model's fields; builds the model."""
    config_lib.validate(config, model_fields(model_class(config)))
    return build_model(config)
