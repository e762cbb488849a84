"""Populations of same-shaped models trained at once: `jax.vmap` over the compiled epoch.

Configs that differ only in values the train state holds (seed, learning rate,
initialiser) share one program: their states are stacked and `steps.train_epoch` is
vmapped over them, so K models cost about one model's wall time on an accelerator and K
times the arithmetic on a CPU, with one dispatch per epoch. Configs whose shapes or
computations differ (width, depth, activation, batch size, ...) form separate groups.
"""

import functools
import hashlib
import json
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from optax import tree_utils as optax_tree

from mlp_jax import data, files, metrics, models, optim, steps

# Fields that only change numbers inside the train state, never the compiled program.
VALUE_FIELDS = frozenset({"seed", "lr", "weight_init", "init_scale"})


def group_key(config: ml_collections.ConfigDict) -> str:
    """What must be equal for two configs to train in one population."""
    shape = {k: v for k, v in config.to_dict().items() if k not in VALUE_FIELDS}
    return json.dumps(shape, sort_keys=True)


def group_configs(configs: Sequence[ml_collections.ConfigDict]) -> list[list[int]]:
    """Indices of `configs` grouped by `group_key`, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(group_key(config), []).append(i)
    return list(groups.values())


def stack_states(configs: Sequence[ml_collections.ConfigDict], num_train: int) -> steps.TrainState:
    """One train state per config, stacked along a new leading axis.

    Each member is initialised by its own model (its own initialiser and seed); all share
    the first member's apply function and optimiser, with each member's learning rate
    written into its optimiser state. `num_train` (training examples) sets the schedule.
    """
    shared_model, tx = _shared_model_and_optimizer(group_key(configs[0]), num_train)
    members = []
    for config in configs:
        state = _create_train_state(models.resolve_model(config), tx, config.seed)
        opt_state = optax_tree.tree_set(state.opt_state, step_size=jnp.float32(-config.lr))
        members.append(state.replace(apply_fn=shared_model.apply, opt_state=opt_state))
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)


# One compiled program per model and optimiser: a population of 1,024 members then costs
# 1,024 dispatches, not 1,024 times the dozens of operations of an initialisation.
_create_train_state = jax.jit(steps.create_train_state, static_argnums=(0, 1))


@functools.cache
def _shared_model_and_optimizer(shape_key: str, num_train: int):
    """The model (for its apply function) and the optimiser a population shares, made once
    per shape: they are static parts of the train state, so jit's cache hits only when they
    are the same objects. The learning rate is a placeholder; each member's is set apart."""
    config = ml_collections.ConfigDict({**json.loads(shape_key), "lr": 1.0})
    tx = optim.make_optimizer(config, optim.steps_per_epoch(num_train, config.batch_size))
    return models.build_model(config), tx


@functools.cache
def _compiled_population_fns(epoch_options: tuple, eval_batch_size: int):
    """The vmapped epoch and evaluation, made once per setting so jit's cache is reused.

    Args:
      epoch_options: `steps.epoch_options` as sorted (name, value) pairs (hashable).
      eval_batch_size: the evaluation chunk.
    """
    epoch = functools.partial(steps.train_epoch, **dict(epoch_options))
    evaluate = functools.partial(steps.evaluate, batch_size=eval_batch_size)
    return (
        jax.jit(jax.vmap(epoch, in_axes=(0, None)), donate_argnums=0),
        jax.jit(jax.vmap(evaluate, in_axes=(0, None))),
    )


def _per_member(collection, prefix: str) -> list[dict[str, float]]:
    """A stacked metric collection computed model by model, as host floats."""
    host = jax.device_get(jax.vmap(lambda c: c.compute())(collection))
    size = len(next(iter(host.values())))
    return [metrics.record_values({k: v[i] for k, v in host.items()}, prefix) for i in range(size)]


def train_group(
    configs: Sequence[ml_collections.ConfigDict], dataset: data.Dataset, evaluate_test: bool = True
) -> list[dict]:
    """Trains configs of one group as a vmapped population.

    Returns:
      One result per config: {"history": [per-epoch train/val records], "test_loss",
      "test_acc"}; the test split is evaluated once, after the last epoch, and not at all
      without `evaluate_test` (a search must not see it). A member that diverges keeps NaN
      in its records; the others are unaffected.
    """
    assert len(group_configs(configs)) == 1, "configs of different shapes"
    first = configs[0]
    train_epoch, evaluate = _compiled_population_fns(
        tuple(sorted(steps.epoch_options(first).items())), first.eval_batch_size
    )
    state = stack_states(configs, len(dataset.train.labels))
    train_split, val_split = jax.device_put(dataset.train), jax.device_put(dataset.validation)
    histories = [[] for _ in configs]
    for epoch in range(1, first.num_epochs + 1):
        state, train_metrics = train_epoch(state, train_split)
        val_metrics = evaluate(state, val_split)
        train_rows = _per_member(train_metrics, "train_")
        val_rows = _per_member(val_metrics, "val_")
        for history, train_row, val_row in zip(histories, train_rows, val_rows, strict=True):
            history.append({"epoch": epoch, **train_row, **val_row})
    if not evaluate_test:
        return [{"history": h} for h in histories]
    test_rows = _per_member(evaluate(state, jax.device_put(dataset.test)), "test_")
    return [{"history": h, **t} for h, t in zip(histories, test_rows, strict=True)]


def train_population(
    configs: Sequence[ml_collections.ConfigDict],
    dataset: data.Dataset,
    *,
    max_population: int = 64,
    cache_dir: str | os.PathLike | None = None,
    evaluate_test: bool = True,
) -> list[dict]:
    """Trains every config, grouping same-shaped ones into vmapped populations.

    Args:
      configs: resolved experiment configs.
      dataset: the splits to train, validate and test on.
      max_population: most models in one program (bounds device memory).
      cache_dir: if given, each population's results are saved there when it finishes and
        reused by a rerun, which then trains only what is missing.
      evaluate_test: whether to evaluate the test split after training.

    Returns:
      `train_group`'s result for each config, in the order given, with "train_seconds".
    """
    dataset = jax.device_put(dataset)  # Once, not once per population.
    results: list[dict | None] = [None] * len(configs)
    for indices in group_configs(configs):
        for start in range(0, len(indices), max_population):
            chunk = indices[start : start + max_population]
            members = [configs[i] for i in chunk]
            for i, result in zip(
                chunk, _train_chunk(members, dataset, cache_dir, evaluate_test), strict=True
            ):
                results[i] = result
    return results


def _train_chunk(members, dataset, cache_dir, evaluate_test: bool) -> list[dict]:
    """One population, from the cache when it holds it. Each result carries its share of the
    population's training seconds ("train_seconds"), so totals survive a cached rerun."""
    path = None
    if cache_dir is not None:
        path = files.as_path(cache_dir) / f"{_digest(members, evaluate_test)}.json"
        if path.exists():
            return json.loads(path.read_text())
    t0 = time.perf_counter()
    chunk_results = train_group(members, dataset, evaluate_test)
    share = (time.perf_counter() - t0) / len(members)
    chunk_results = [{**result, "train_seconds": share} for result in chunk_results]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomically(path, json.dumps(chunk_results))
    return chunk_results


def _digest(configs, evaluate_test: bool) -> str:
    payload = json.dumps([[c.to_dict() for c in configs], evaluate_test, 2], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
