"""The in-memory run loop: one model trained epoch by epoch on data that stay on the devices,
each `config.epochs_per_program` epochs (one by default) one compiled program, with exact
validation after every epoch inside it.

Every single-model run goes through it: the command line (`mlp_jax.train`, which puts the
workdir's files, checkpoints and signals around it), the speed benchmarks, the speedrun and
the tests, in one sequence: `prepare` (the optimiser, the runner, the data on the devices),
a first state (fresh or restored), `start` (the plan of programs, the state on the devices,
the programs compiled), then `epochs`, which yields each epoch once its program has run,
with the state after it at the end of each program, so the caller does its host work
(logging between epochs, saving and deciding to stop between programs) never inside one.
`fit` runs that sequence in memory; `mlp_jax.train` runs it into a workdir. A population's
epochs (`mlp_jax.sweep`, one program per epoch) go through `epochs` too.
"""

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from mlp_jax import data, errors, metrics, models, optim, parallel, steps
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


# A run's programs, compiled ahead of time for its state and data: {K: the program of K
# epochs, each with its validation (`mlp_jax.parallel.Runner.train_epochs`)} for each K its
# plan holds. (A population's are jitted, compiled at their first call, so that every
# population of one shape shares them.)
Compiled = dict[int, jax.stages.Compiled]


class Epoch(NamedTuple):
    """One finished epoch: the state after it (in the runner's layout) where the host has
    it, at the end of each program (None inside one), and its record (a line of
    metrics.jsonl; for a population, its train_ and val_ values are each member's, in
    record["members"])."""

    state: steps.TrainState | None
    record: dict


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
    data.check_dataset(dataset)
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


def program_plan(
    config: ml_collections.ConfigDict, first_epoch: int, host_epochs: Iterable[int] = ()
) -> list[int]:
    """How many epochs each compiled program runs, from `first_epoch` to the last: at most
    `config.epochs_per_program`, ending after every epoch in `host_epochs` (where the host
    must act: a checkpoint) and around `config.trace_epoch` (traced alone).

    E.g. epochs 1..10, 4 per program, host epochs {5}: [4, 1, 4, 1].
    """
    stops = set(host_epochs) | {config.trace_epoch - 1, config.trace_epoch}
    plan, length = [], 0
    for epoch in range(first_epoch, config.num_epochs + 1):
        length += 1
        if length == config.epochs_per_program or epoch in stops or epoch == config.num_epochs:
            plan.append(length)
            length = 0
    return plan


class Started(NamedTuple):
    """A run ready for its first epoch: its state in the runner's layout, its plan (see
    `program_plan`) and the plan's programs, compiled."""

    state: steps.TrainState
    plan: list[int]
    compiled: Compiled


def start(run: Run, state: steps.TrainState, host_epochs: Iterable[int] = ()) -> Started:
    """What every run does between its first state and its first epoch (`fit`, and
    `mlp_jax.train` with its checkpoints' epochs as `host_epochs`): plans the programs from
    the epoch after `state`'s, puts the state on the devices, and compiles the programs.

    Args:
      run: what `prepare` made.
      state: the state to continue from (fresh or restored), in one copy.
      host_epochs: the epochs after which the host must act (see `program_plan`).
    """
    plan = program_plan(run.config, int(state.epoch) + 1, host_epochs)
    state = run.runner.replicate(state)
    return Started(state, plan, compile_run(run, state, plan))


def compile_run(run: Run, state: steps.TrainState, plan: Sequence[int]) -> Compiled:
    """Compiles the program of each length the run's plan (see `program_plan`) holds, once,
    ahead of time, so that no epoch's time includes compilation."""
    return {
        k: run.runner.train_epochs(k).lower(state, run.train_data, run.val_data).compile()
        for k in sorted(set(plan))
    }


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def epochs(
    run: Run,
    compiled: Compiled,
    state: steps.TrainState,
    plan: Sequence[int],
    trace_dir: str | os.PathLike | None = None,
    *,
    members: int | None = None,
) -> Iterator[Epoch]:
    """Trains from the epoch after `state`'s, one program of `plan` after another (see
    `program_plan`), yielding each epoch.

    The state is donated to the next program: a caller keeps what it needs of one (a
    checkpoint's save copies it) before asking for the next epoch.

    Args:
      run, compiled: what `prepare` and `compile_run` (with this plan) made.
      state: the state to continue from (fresh, or restored), in the runner's layout.
      plan: the epochs of each program, from the epoch after `state`'s.
      trace_dir: where a `jax.profiler` trace of epoch `config.trace_epoch` goes (none
        without it).
      members: for a population (`mlp_jax.sweep`: its state and metrics stacked along a
        leading axis), how many of its members are real (the rest are padding): each
        record then holds theirs, and a member that diverges keeps NaN in its records while
        the others go on.

    Raises:
      Diverged: the loss or the parameters are not finite after an epoch (of a single
        model); nothing of its program is yielded, so nothing of it is saved.
    """
    config, runner = run.config, run.runner
    epoch = int(jnp.max(runner.unreplicate(state).epoch))  # Every member's is the same.
    for length in plan:
        tracing = trace_dir is not None and epoch < config.trace_epoch <= epoch + length
        if tracing:
            jax.profiler.start_trace(os.fspath(trace_dir))
        state, per_epoch, seconds = _run_program(run, compiled, state, length)
        if tracing:
            _stop_trace(trace_dir)
        records = [
            {
                "epoch": epoch + i,
                **_values(train_metrics, val_metrics, members),
                "train_seconds": seconds,
                "examples_per_sec": run.num_train / seconds,
            }
            for i, (train_metrics, val_metrics) in enumerate(per_epoch, start=1)
        ]
        if members is None:
            _check_finite(records, runner.unreplicate(state.params), config.lr)
        for record in records[:-1]:
            yield Epoch(None, record)
        yield Epoch(state, records[-1])
        epoch += length


# Where jax.profiler writes a trace, inside the folder it is given (TensorBoard's layout).
TRACE_FOLDER = os.path.join("plugins", "profile")


def _stop_trace(trace_dir: str | os.PathLike) -> None:
    """Ends the profiler's trace. One that cannot be written is a warning, and the run goes
    on: the epochs are worth more than their trace (a profile folder that refused files
    ended the run in a traceback, the traced epoch trained and lost)."""
    try:
        jax.profiler.stop_trace()
    except jax.errors.JaxRuntimeError as e:
        # JAX forgets a session only once its export succeeded: the next start_trace in
        # this process (a notebook's next run) would find one still running.
        with contextlib.suppress(AttributeError):
            jax._src.profiler._profile_state.reset()  # noqa: SLF001  (no public API does)
        logging.warning(
            "the trace could not be written into %s (%s); the run goes on without it",
            os.path.join(trace_dir, TRACE_FOLDER),
            errors.first_line(e),
        )


def _run_program(run: Run, compiled: Compiled, state: steps.TrainState, length: int):
    """One program of `length` epochs: (the state after it, each epoch's (TrainMetrics,
    EvalMetrics) in one copy, and each epoch's share of the program's seconds, its
    validation included)."""
    t0 = time.perf_counter()
    # Its inputs are on the devices already, laid out as it was compiled for, so that an
    # implicit copy (an array left on the host, a state in another layout) is a bug that
    # would cost every epoch: it fails instead, as big_vision's jax_transfer_guard makes it.
    # Explicit copies (device_put) stay allowed.
    with jax.transfer_guard("disallow"):
        state, stacked = compiled[length](state, run.train_data, run.val_data)
    stacked = jax.block_until_ready(run.runner.unreplicate(stacked))
    seconds = (time.perf_counter() - t0) / length
    return state, [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(length)], seconds


def _values(train_metrics, val_metrics, members: int | None) -> dict:
    """An epoch's train_ and val_ values: the model's, or each of a population's first
    `members` members' (in "members")."""
    if members is None:
        return {
            **metrics.to_floats(train_metrics, "train_"),
            **metrics.to_floats(val_metrics, "val_"),
        }
    train_rows = member_values(train_metrics, "train_", members)
    val_rows = member_values(val_metrics, "val_", members)
    return {"members": [{**t, **v} for t, v in zip(train_rows, val_rows, strict=True)]}


def member_values(collection, prefix: str, members: int) -> list[dict[str, float]]:
    """The first `members` members of a stacked metric collection, computed model by model,
    as host floats (the rest are padding)."""
    host = parallel.to_host(jax.vmap(lambda c: c.compute())(collection))
    return [
        metrics.record_values({k: v[i] for k, v in host.items()}, prefix) for i in range(members)
    ]


def _check_finite(records: list[dict], params, lr: float) -> None:
    """Raises Diverged for the first of a program's epochs whose loss is not finite, or
    for its last when the parameters it ends with are not."""
    params_finite = bool(_all_finite(params))
    for record in records:
        if not math.isfinite(record["train_loss"]) or (record is records[-1] and not params_finite):
            raise Diverged(
                f"training diverged: the loss is {record['train_loss']} in epoch "
                f"{record['epoch']}; nothing of it was saved; lower --config.lr (now {lr})"
            )


def fit(
    config: ml_collections.ConfigDict,
    dataset: data.Dataset,
    state: steps.TrainState | None = None,
) -> Result:
    """Trains the config's model on `dataset` in memory (no workdir, no checkpoints),
    validating on its validation split after every epoch, `config.epochs_per_program`
    epochs per compiled program.

    Args:
      config: a resolved experiment config.
      dataset: the splits (its test split is not read).
      state: a single-copy state to continue from, default a fresh one from `config.seed`;
        its buffers are donated to the first epoch, so the caller's copy is used up.

    Returns:
      The final state (one copy), the epochs' records, and the seconds spent making the
      state ("state"), compiling ("compile"), training ("train": the epochs' own seconds,
      their validation included, since it runs inside their programs), and in the whole
      epoch loop ("loop": wall time, checks and host work between epochs included, as a
      peer's loop is timed).

    Raises:
      Diverged: as `epochs` does.
      TypeError, ValueError: `dataset` is not a `data.Dataset` as `data.load_dataset` gives
        (see `data.check_dataset`).
    """
    parallel.check_jax_settings()
    t0 = time.perf_counter()
    model = models.resolve_model(config)
    run = prepare(config, dataset)
    if state is None:
        state = steps.create_train_state(model, run.tx, config.seed)
    t1 = time.perf_counter()
    started = start(run, state)
    t2 = time.perf_counter()
    history, state = [], started.state
    for epoch in epochs(run, started.compiled, started.state, started.plan):
        state = state if epoch.state is None else epoch.state
        history.append(epoch.record)
    seconds = {
        "state": t1 - t0,
        "compile": t2 - t1,
        "train": sum(record["train_seconds"] for record in history),
        "loop": time.perf_counter() - t2,
    }
    return Result(run.runner.unreplicate(state), history, seconds)
