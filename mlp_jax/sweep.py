"""Populations of same-shaped models trained at once: `jax.vmap` over the compiled epoch.

Configs that differ only in values the train state holds (seed, learning rate,
initialiser) share one program: their states are stacked and `steps.train_epochs` (of one
epoch and its validation) is vmapped over them, so K models cost about one model's wall
time on an accelerator and K times the arithmetic on a CPU, with one dispatch per epoch.
The epochs run through the run loop (`mlp_jax.loop.epochs`), with a population's runner.
Configs whose shapes or computations differ (width, depth, activation, batch size, ...)
form separate groups. Each population is spread over every device (its members sharded
along the leading axis), on one host or several; `mlp_jax.progress.Progress` shows what
runs.
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
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from optax import tree_utils as optax_tree

from mlp_jax import checkpointing, data, files, loop, models, optim, parallel, signals, steps
from mlp_jax import config as config_lib
from mlp_jax.config import EpochOptions
from mlp_jax.errors import UserError
from mlp_jax.progress import Progress

# The device-mesh axis along which a population's members are spread.
POPULATION_AXIS = "population"
# What each member's cached result holds that is read back (by the searches and the
# studies): a result file edited to lack it was an IndexError or KeyError there.
RESULT_SHAPE = {
    "history": [{"train_loss": float, "val_loss": float, "val_acc": float}],
    "train_seconds": float,
}


def group_key(config: ml_collections.ConfigDict) -> str:
    """What must be equal for two configs to train in one population: every field both
    single runs and populations read that the members must share (see `mlp_jax.config`'s
    roles); what one of them alone reads never matters here."""
    ignored = config_lib.names(
        lambda field: (
            field.in_population == config_lib.PER_MEMBER
            or field.run_only()
            or field.population_only()
        )
    )
    shape = {k: v for k, v in config.to_dict().items() if k not in ignored}
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
        state = steps.create_train_state(models.resolve_model(config), tx, config.seed)
        opt_state = optax_tree.tree_set(
            state.opt_state, step_size=jax.device_put(np.float32(-config.lr))
        )
        members.append(state.replace(apply_fn=shared_model.apply, opt_state=opt_state))
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)


@functools.cache
def _shared_model_and_optimizer(shape_key: str, num_train: int):
    """The model (for its apply function) and the optimiser a population shares, made once
    per shape: they are static parts of the train state, so jit's cache hits only when they
    are the same objects. The learning rate is a placeholder; each member's is set apart."""
    config = ml_collections.ConfigDict({**json.loads(shape_key), "lr": 1.0})
    tx = optim.make_optimizer(config, optim.steps_per_epoch(num_train, config.batch_size))
    return models.build_model(config), tx


def _one_model_of_population(fn, out_axes):
    """`fn(state, *data)` of one model, applied to a population of one: the leading axis of
    size 1 is dropped going in and restored coming out, at `out_axes` (a prefix of the
    output's tree, as vmap's), as bitcasts inside jit."""

    def apply(state, *data):
        out = fn(jax.tree.map(lambda x: x[0], state), *data)
        return jax.tree.map(_with_axis, out_axes, out)

    return apply


def _with_axis(axis: int, tree):
    return jax.tree.map(lambda x: jnp.expand_dims(x, axis), tree)


@functools.cache
def _compiled_population_fns(
    options: EpochOptions, eval_batch_size: int, one_model: bool, shared_order: bool
):
    """The population's programs and evaluation, made once per setting so jit's cache is
    reused: (K -> the program of K epochs, each with its validation, as a run's
    (`mlp_jax.parallel.Runner.train_epochs`) with a member axis leading the state and
    following the epoch axis of the metrics; the test split's evaluation).

    Args:
      options: the epoch's options.
      eval_batch_size: the evaluation chunk.
      one_model: the population is one model on one device: it then runs the program of
        `make train`, not vmapped (vmap over an axis of 1 made XLA:CPU compute transposed
        weight gradients and transpose them back every step, about 20 % of an epoch of
        3 x 1024), so a search's candidate trains as fast as, and equal to, its own run.
      shared_order: the members share one seed, so one data order: each batch is gathered
        once and enters the vmapped step unbatched (see `steps.train_epoch`).
    """
    evaluate = functools.partial(
        steps.evaluate, batch_size=eval_batch_size, compute_dtype=options.compute_dtype
    )

    def program(num_epochs: int):
        epochs = functools.partial(
            steps.train_epochs,
            num_epochs=num_epochs,
            options=options,
            eval_batch_size=eval_batch_size,
        )
        if one_model:
            epochs = _one_model_of_population(epochs, (0, 1))
        elif shared_order:  # The epoch vmaps its step itself, over the batch it gathers once.
            epochs = functools.partial(epochs, shared_order=True)
        else:
            epochs = jax.vmap(epochs, (0, None, None), (0, 1))
        return jax.jit(epochs, donate_argnums=0)

    batched = _one_model_of_population(evaluate, 0) if one_model else jax.vmap(evaluate, (0, None))
    return functools.cache(program), jax.jit(batched)


def population_runner(programs, mesh: Mesh) -> parallel.Runner:
    """A population's runner: its `programs` (see `_compiled_population_fns`), with the data
    replicated over `mesh` and the state, stacked, kept whole (sharded along
    POPULATION_AXIS, as train_group places it and checkpoints hold it)."""
    return parallel.Runner(
        POPULATION_AXIS,
        mesh.size,
        programs,
        functools.partial(parallel.replicate_over_mesh, mesh=mesh),
        lambda tree: tree,
        NamedSharding(mesh, P(POPULATION_AXIS)),
    )


def shares_order(configs: Sequence[ml_collections.ConfigDict]) -> bool:
    """Whether a population trains with one data order for all (`config.share_data_order`):
    several members, all of one seed, asking for it."""
    return (
        len(configs) > 1
        and len({c.seed for c in configs}) == 1
        and all(c.share_data_order for c in configs)
    )


def population_mesh() -> Mesh:
    """Every device, along the population axis: K models train as K / N per device."""
    return parallel.make_mesh(jax.devices(), POPULATION_AXIS)


def describe(config: ml_collections.ConfigDict) -> str:
    """A population's shape in a few words, e.g. "MLP activation=relu,
    batch_size=256, num_hiddens=256, num_layers=1": its fields declared `shown`."""
    sizes = ", ".join(f"{k}={config[k]}" for k in config if config_lib.declared(k).shown)
    return f"{config.model.split(':')[-1]} {sizes}".strip()


def train_group(
    configs: Sequence[ml_collections.ConfigDict],
    dataset: data.Dataset,
    evaluate_test: bool = True,
    *,
    mesh: Mesh | None = None,
    progress: Progress | None = None,
    saved: checkpointing.CheckpointStore | None = None,
    stop: signals.StopRequests | None = None,
) -> list[dict]:
    """Trains configs of one group as a vmapped population, split over the devices.

    The stacked train state is sharded along its leading (population) axis over `mesh`
    (default: every device) and the data are replicated, so each device trains its share of
    the models in the same compiled epoch. A population the device count does not divide is
    padded with copies of its first member, whose results are dropped.

    Args:
      configs, dataset, evaluate_test: what to train (see `train_population`).
      mesh, progress: where it trains and what it shows.
      saved: where the population's state is saved when a stop is requested, and resumed
        from; without it a stop ends the population unsaved.
      stop: the stop requests read after every epoch (none are without it).

    Returns:
      One result per config: {"history": [per-epoch train/val records], "test_loss",
      "test_acc", "train_seconds": its share of the population's seconds, those before a
      stop it resumed from included}; the test split is evaluated once, after the last
      epoch, and not at all without `evaluate_test` (a search must not see it). A member
      that diverges keeps NaN in its records; the others are unaffected.

    Raises:
      signals.Interrupted: a stop was requested; the epoch in flight finished (and was
        saved in `saved`).
    """
    started, earlier_seconds = time.perf_counter(), 0.0
    assert len(group_configs(configs)) == 1, "configs of different shapes"
    first, size = configs[0], len(configs)
    mesh = mesh or population_mesh()
    padded = [*configs, *[first] * (-size % mesh.size)]
    programs, evaluate = _compiled_population_fns(
        EpochOptions.from_config(first),
        first.eval_batch_size,
        len(padded) == 1,
        shares_order(padded),
    )
    runner = population_runner(programs, mesh)
    # The run loop's, the members' own optimisers being in their stacked state.
    run = loop.prepare(first, dataset, runner)
    state = parallel.place(stack_states(padded, run.num_train), runner.copy_sharding)
    histories = [[] for _ in configs]
    resumed = None if saved is None else saved.restore_latest(jax.tree.map(_abstract, state))
    if saved is not None:  # A full cache folder was found so once the population had trained.
        saved.check_room_to_save(state)
    if resumed is not None:
        state, histories = resumed[0], resumed[1]["histories"]
        earlier_seconds = resumed[1]["seconds"]
    # One epoch per program: the host acts after each (progress, stop, save).
    plan = [1] * (first.num_epochs - len(histories[0]))
    for finished in loop.epochs(run, {1: programs(1)}, state, plan, members=size):
        state, epoch, rows = finished.state, finished.record["epoch"], finished.record["members"]
        for history, row in zip(histories, rows, strict=True):
            history.append({"epoch": epoch, **row})
        if progress is not None:
            progress.epoch_done(epoch, first.num_epochs, size, [r["val_acc"] for r in rows])
        stop_signal = stop.agreed_signal() if stop is not None else 0
        if stop_signal and epoch < first.num_epochs:
            seconds = earlier_seconds + time.perf_counter() - started
            _stop(state, histories, seconds, saved, stop_signal, f"{epoch}/{first.num_epochs}")
    test_rows = [{}] * size
    if evaluate_test:
        test_split = runner.replicate(dataset.test)
        with jax.transfer_guard("disallow"):  # As around the epochs: no implicit copy.
            tested = evaluate(state, test_split)
        test_rows = loop.member_values(tested, "test_", size)
    share = (earlier_seconds + time.perf_counter() - started) / size
    return [
        {"history": h, **t, "train_seconds": share}
        for h, t in zip(histories, test_rows, strict=True)
    ]


def _abstract(x: jax.Array) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)


def _stop(state, histories, seconds: float, saved, stop_signal: int, epochs: str):
    """Saves a population stopped after an epoch (where it has a place) and ends it."""
    where = "nothing of it was kept (a population without a cache_dir is not saved)"
    if saved is not None:
        saved.save(state, {"histories": histories, "seconds": seconds})
        saved.close()  # Written before the population ends.
        where = f"it is saved in {saved.workdir}; rerun the same command to resume"
    raise signals.Interrupted(
        f"stopped by {signals.name(stop_signal)} after epoch {epochs} of a population; {where}",
        128 + stop_signal,
    )


def train_population(
    configs: Sequence[ml_collections.ConfigDict],
    dataset: data.Dataset,
    *,
    max_population: int = 64,
    cache_dir: str | os.PathLike | None = None,
    evaluate_test: bool = True,
    progress: bool | None = None,
    mesh: Mesh | None = None,
) -> list[dict]:
    """Trains every config, grouping same-shaped ones into vmapped populations, each split
    over every device.

    Args:
      configs: resolved experiment configs.
      dataset: the splits to train, validate and test on.
      max_population: most models per device in one program (bounds device memory).
      cache_dir: if given, each population's results are saved there when it finishes and
        reused by a rerun, which then trains only what is missing.
      evaluate_test: whether to evaluate the test split after training.
      progress: how to show progress (see `mlp_jax.progress.Progress`): True a live bar,
        False a plain line per population, None chooses by the output (a bar on a terminal
        or in a notebook).
      mesh: the devices to spread each population over (default: every device).

    Returns:
      `train_group`'s result for each config, in the order given, with "train_seconds".

    Raises:
      signals.Interrupted: a terminating signal (Ctrl-C, SIGTERM, SIGHUP...) arrived; the
        population's epoch in flight finished, and with `cache_dir` it was saved there, so
        that a rerun resumes it.
      UserError: a config of no epochs, or `max_population` below 1.
      TypeError, ValueError: `configs` is no sequence of configs, or `dataset` not one
        `data.load_dataset` gives (see `data.check_dataset`).
    """
    if not all(isinstance(config, ml_collections.ConfigDict) for config in configs):
        raise TypeError("configs: give a list of experiment configs, [config] for one")
    parallel.check_jax_settings()
    if (fewest := min((config.num_epochs for config in configs), default=1)) < 1:
        # Its results hold no epoch: it was trained, cached, then an IndexError at the
        # summary, and the rerun refused what it had cached itself.
        raise UserError(f"num_epochs={fewest}: each member of a population trains 1 epoch or more")
    if max_population < 1:
        raise UserError(f"max_population={max_population} is invalid: give 1 or more")
    if cache_dir is not None:  # Where a stopped population is saved: refused before any.
        cache_dir = checkpointing.workdir_path(cache_dir)
    data.check_dataset(
        dataset, ("train", "validation", "test") if evaluate_test else ("train", "validation")
    )
    mesh = mesh or population_mesh()
    dataset = parallel.place(dataset, NamedSharding(mesh, P()))  # Once, not per population.
    chunk_size = max_population * mesh.size
    chunks = [
        indices[start : start + chunk_size]
        for indices in group_configs(configs)
        for start in range(0, len(indices), chunk_size)
    ]
    model_epochs = sum(len(chunk) * configs[chunk[0]].num_epochs for chunk in chunks)
    shown = Progress(len(chunks), model_epochs, live=progress)
    results: list[dict | None] = [None] * len(configs)
    with shown, signals.StopRequests() as stop:
        for number, chunk in enumerate(chunks, start=1):
            members = [configs[i] for i in chunk]
            shown.population_started(number, describe(members[0]), len(members))
            chunk_results, cached = _train_chunk(
                members, dataset, cache_dir, evaluate_test, mesh, shown, stop
            )
            shown.population_done(
                members[0].num_epochs,
                len(members),
                cached,
                [row["val_acc"] for result in chunk_results for row in result["history"]],
            )
            for i, result in zip(chunk, chunk_results, strict=True):
                results[i] = result
            # A signal during a population's last epoch: it is finished (and cached).
            stop_signal = stop.agreed_signal()
            if stop_signal:
                kept = f"cached in {cache_dir}" if cache_dir is not None else "not kept"
                raise signals.Interrupted(
                    f"stopped by {signals.name(stop_signal)} after population {number}/"
                    f"{len(chunks)}; the populations trained are {kept}; rerun the same "
                    "command to go on",
                    128 + stop_signal,
                )
    return results


def _train_chunk(members, dataset, cache_dir, evaluate_test, mesh, progress, stop):
    """One population, from the cache when it holds it: (results, whether cached). Each
    result carries its share of the population's training seconds ("train_seconds"), so
    totals survive a cached rerun. A population stopped mid-way is saved beside its results
    (CACHE_DIR/DIGEST.partial), resumed from there, and that state removed once its results
    are written."""
    train = functools.partial(
        train_group, members, dataset, evaluate_test, mesh=mesh, progress=progress, stop=stop
    )
    if cache_dir is None:
        return train(), False
    stem = files.as_path(cache_dir) / _digest(members, evaluate_test)
    path, partial = stem.with_suffix(".json"), stem.with_suffix(".partial")
    cached = files.read_record(path, [RESULT_SHAPE])
    if cached is not None:
        if len(cached) != len(members) or not all(result["history"] for result in cached):
            raise UserError(
                f"{path}: not the results of this population ({len(members)} members, each "
                "with its history); delete it to train them again"
            )
        return cached, True
    saved = checkpointing.CheckpointStore(partial, keep=1)
    try:
        results = train(saved=saved)
    finally:
        saved.close()
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomically(path, json.dumps(results))
        partial.rmtree(missing_ok=True)  # Its results are written: the state is spent.
    return results, False


def _digest(configs, evaluate_test: bool) -> str:
    """The cache key of a population: its configs less what populations never read."""
    run_only = config_lib.names(config_lib.Field.run_only)
    read = [{k: v for k, v in c.to_dict().items() if k not in run_only} for c in configs]
    payload = json.dumps([read, evaluate_test, 2], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
