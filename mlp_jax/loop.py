"""The in-memory run loop: one model trained epoch by epoch on data that stay on the devices,
each epoch one compiled program, with exact validation after it.

Every single-model run goes through it: the command line (`mlp_jax.train`, which puts the
workdir's files, checkpoints and signals around it), the speed benchmarks, the speedrun and
the tests. `epochs` yields after each epoch, so the caller does its host work (logging,
saving, deciding to stop) between epochs and never inside one; `fit` runs it all in memory.
"""

import math
import os
import time
from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mlp_jax import data, metrics, models, optim, parallel, steps
from mlp_jax.config import EpochOptions
from mlp_jax.errors import UserError


class Diverged(UserError):
    """The loss or the parameters stopped being finite after an epoch."""


class Run(NamedTuple):
    """What stays fixed while a model trains.

    Attributes:
      config: the resolved config.
      runner: the compiled epoch's parallel mode (see `mlp_jax.parallel.Runner`).
      tx: the optimiser.
      train_data, val_data: the splits to train and validate on, in the runner's layout.
      num_train: training examples.
      steps_per_epoch: optimiser steps in an epoch.
    """

    config: ml_collections.ConfigDict
    runner: parallel.Runner
    tx: optax.GradientTransformation
    train_data: data.Split
    val_data: data.Split
    num_train: int
    steps_per_epoch: int


class Compiled(NamedTuple):
    """A run's epoch and evaluation, compiled ahead of time for its state and data."""

    train_epoch: jax.stages.Compiled
    evaluate: jax.stages.Compiled


class Epoch(NamedTuple):
    """One finished epoch: the state after it (in the runner's layout), its record (a line
    of metrics.jsonl) and the seconds its validation took."""

    state: steps.TrainState
    record: dict
    eval_seconds: float


class Result(NamedTuple):
    """A finished run: its final state (one copy), its per-epoch records, and the seconds of
    its phases."""

    state: steps.TrainState
    history: list[dict]
    phase_seconds: dict[str, float]


def make_runner(config: ml_collections.ConfigDict) -> parallel.Runner:
    """The runner the config asks for (its parallel mode, devices and epoch options)."""
    return parallel.make_runner(
        config.parallel,
        options=EpochOptions.from_config(config),
        eval_batch_size=config.eval_batch_size,
        num_devices=config.num_devices,
    )


def prepare(
    config: ml_collections.ConfigDict, dataset: data.Dataset, runner: parallel.Runner | None = None
) -> Run:
    """The config's optimiser and runner (made here unless given), with the training and
    validation splits put on the devices."""
    runner = runner or make_runner(config)
    num_train = len(dataset.train.labels)
    steps_per_epoch = optim.steps_per_epoch(num_train, config.batch_size)
    return Run(
        config,
        runner,
        optim.make_optimizer(config, steps_per_epoch),
        runner.replicate(dataset.train),
        runner.replicate(dataset.validation),
        num_train,
        steps_per_epoch,
    )


def compile_run(run: Run, state: steps.TrainState) -> Compiled:
    """Compiles the epoch and the evaluation once, ahead of time, so that no epoch's time
    includes compilation."""
    return Compiled(
        run.runner.train_epoch.lower(state, run.train_data).compile(),
        run.runner.evaluate.lower(state, run.val_data).compile(),
    )


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def epochs(
    run: Run,
    compiled: Compiled,
    state: steps.TrainState,
    trace_dir: str | os.PathLike | None = None,
) -> Iterator[Epoch]:
    """Trains from the epoch after `state`'s to `config.num_epochs`, yielding each epoch.

    The state is donated to the next epoch: a caller keeps what it needs of one (a
    checkpoint's save copies it) before asking for the next.

    Args:
      run, compiled: what `prepare` and `compile_run` made.
      state: the state to continue from (fresh, or restored), in the runner's layout.
      trace_dir: where a `jax.profiler` trace of epoch `config.trace_epoch` goes (none
        without it).

    Raises:
      Diverged: the loss or the parameters are not finite after an epoch (it is not
        yielded, so nothing of it is saved).
    """
    config, runner = run.config, run.runner
    for epoch in range(int(runner.unreplicate(state).epoch) + 1, config.num_epochs + 1):
        tracing = trace_dir is not None and epoch == config.trace_epoch
        if tracing:
            jax.profiler.start_trace(os.fspath(trace_dir))
        t0 = time.perf_counter()
        state, train_metrics = compiled.train_epoch(state, run.train_data)
        train_metrics = jax.block_until_ready(runner.unreplicate(train_metrics))
        seconds = time.perf_counter() - t0
        if tracing:
            jax.profiler.stop_trace()
        val_metrics = runner.unreplicate(compiled.evaluate(state, run.val_data))
        record = {
            "epoch": epoch,
            **metrics.to_floats(train_metrics, "train_"),
            **metrics.to_floats(val_metrics, "val_"),
            "train_seconds": seconds,
            "examples_per_sec": run.num_train / seconds,
        }
        eval_seconds = time.perf_counter() - t0 - seconds
        params_finite = bool(_all_finite(runner.unreplicate(state.params)))
        if not (math.isfinite(record["train_loss"]) and params_finite):
            raise Diverged(
                f"training diverged: the loss is {record['train_loss']} in epoch {epoch}; "
                f"nothing of it was saved; lower --config.lr (now {config.lr})"
            )
        yield Epoch(state, record, eval_seconds)


def fit(
    config: ml_collections.ConfigDict,
    dataset: data.Dataset,
    state: steps.TrainState | None = None,
) -> Result:
    """Trains the config's model on `dataset` in memory (no workdir, no checkpoints),
    validating on its validation split after every epoch.

    Args:
      config: a resolved experiment config.
      dataset: the splits (its test split is not read).
      state: a single-copy state to continue from, default a fresh one from `config.seed`;
        its buffers are donated to the first epoch, so the caller's copy is used up.

    Returns:
      The final state (one copy), the epochs' records, and the seconds spent making the
      state ("state"), compiling ("compile"), training ("train": the epochs' own seconds),
      validating ("eval"), and in the whole epoch loop ("loop": wall time, checks and
      host work between epochs included, as a peer's loop is timed).

    Raises:
      Diverged: as `epochs` does.
    """
    t0 = time.perf_counter()
    model = models.resolve_model(config)
    run = prepare(config, dataset)
    if state is None:
        state = steps.create_train_state(model, run.tx, config.seed)
    state = run.runner.replicate(state)
    t1 = time.perf_counter()
    compiled = compile_run(run, state)
    t2 = time.perf_counter()
    history, eval_seconds = [], 0.0
    for epoch in epochs(run, compiled, state):
        state = epoch.state
        history.append(epoch.record)
        eval_seconds += epoch.eval_seconds
    seconds = {
        "state": t1 - t0,
        "compile": t2 - t1,
        "train": sum(record["train_seconds"] for record in history),
        "eval": eval_seconds,
        "loop": time.perf_counter() - t2,
    }
    return Result(run.runner.unreplicate(state), history, seconds)
