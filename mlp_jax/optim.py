"""Optimisers from a config, with the peak learning rate kept as a number in the state.

The learning rate lives in the optimiser state (`inject_hyperparams`), not in the compiled
program, so a population of models in `mlp_jax.sweep` can train with different rates in one
vmapped program.
"""

from typing import NamedTuple

import jax
import ml_collections
import optax

from mlp_jax.config import MAX_WHOLE
from mlp_jax.errors import UserError


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Optimiser steps in one epoch over `num_examples` (the last, partial batch counts)."""
    return -(-num_examples // batch_size)


def _schedule_shape(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """The multiplier of the peak learning rate over training, or None when it is constant."""
    warmup_steps = config.warmup_epochs * steps_per_epoch
    total_steps = max(config.num_epochs * steps_per_epoch, warmup_steps + 1)
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps, total_steps, 0.0)
    if warmup_steps:
        return optax.linear_schedule(0.0, 1.0, warmup_steps)
    return None


class ParamsEMAState(NamedTuple):
    """The exponential moving average of the parameters."""

    ema: optax.Params


def params_ema(decay: float) -> optax.GradientTransformation:
    """Keeps an exponential moving average of the parameters after every update, with the
    updates passing through unchanged; last in a chain, so it sees the final update.

    The average lives in the optimiser state, so checkpoints, resumption and populations carry
    it with no code of their own; `mlp_jax.steps.evaluation_params` evaluates with it.
    """

    def init(params):
        return ParamsEMAState(ema=jax.tree.map(lambda p: p.copy(), params))

    def update(updates, state, params):
        new_params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema, new_params)
        return updates, ParamsEMAState(ema=ema)

    return optax.GradientTransformation(init, update)


# The optimisers made, by config (see `make_optimizer`): the last _KEPT_OPTIMIZERS.
_KEPT_OPTIMIZERS = 64
_OPTIMIZERS: dict[tuple[str, int], optax.GradientTransformation] = {}


def make_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
    """The optimiser the config names (see `mlp_jax.config.OPTIMIZERS`), keeping an average
    of the parameters when `config.ema_decay` is set.

    For "sgd" with a constant schedule this is exactly optax.sgd(lr), d2l's optimiser.

    Equal configs get the very same optimiser (of the last 64 made). An optax
    optimiser is a pair of closures, equal only to itself, and a train state holds it in its
    structure: so a second run of one config in a process (a notebook's rerun, a study's
    runs, the tests) meets the programs jit compiled for the first instead of tracing them
    again.

    Raises:
      UserError: the run's epochs (or warm-up) have more steps than it can count.
    """
    longest = max(config.num_epochs, config.warmup_epochs)
    if longest * steps_per_epoch > MAX_WHOLE:  # The schedule counts steps in 32-bit integers.
        key = "num_epochs" if longest == config.num_epochs else "warmup_epochs"
        raise UserError(
            f"config.{key}={longest} is too long: {longest} epochs of {steps_per_epoch} steps "
            f"pass the {MAX_WHOLE} steps a run can count; lower it, or raise config.batch_size"
        )
    # Keyed by every value of the config, as JSON: any config has one (a frozen ConfigDict
    # refuses a list of dicts, which a study's config may hold).
    key = (config.to_json_best_effort(sort_keys=True), steps_per_epoch)
    if key not in _OPTIMIZERS:
        if len(_OPTIMIZERS) == _KEPT_OPTIMIZERS:
            del _OPTIMIZERS[next(iter(_OPTIMIZERS))]  # The oldest.
        _OPTIMIZERS[key] = _build_optimizer(config, steps_per_epoch)
    return _OPTIMIZERS[key]


def _build_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
    parts = []
    decoupled = config.optimizer == "adamw"
    if config.weight_decay and not decoupled:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    if config.optimizer == "momentum":
        parts.append(optax.trace(decay=config.momentum))
    elif config.optimizer in ("adam", "adamw"):
        parts.append(optax.scale_by_adam(b1=config.momentum))
    if config.weight_decay and decoupled:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    shape = _schedule_shape(config, steps_per_epoch)
    if shape is not None:
        parts.append(optax.scale_by_schedule(shape))
    parts.append(optax.inject_hyperparams(optax.scale)(step_size=-config.lr))
    if config.ema_decay:
        parts.append(params_ema(config.ema_decay))
    return optax.chain(*parts)
