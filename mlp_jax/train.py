"""Sequences a run: config -> data on the devices -> state (fresh or resumed) -> compiled
epochs, with logging, checkpoints and plots between them; and evaluation of a finished run.

This is the only module that sequences a run; `mlp_jax.main` only parses flags.
"""

import contextlib
import functools
import hashlib
import importlib
import json
import os
import threading
import time

import jax
import ml_collections
from etils import epath

from mlp_jax import (
    checkpointing,
    data,
    errors,
    files,
    locks,
    loop,
    metrics,
    models,
    parallel,
    progress,
    signals,
    steps,
    writers,
)
from mlp_jax import config as config_lib
from mlp_jax.errors import UserError

# What a run keeps in its workdir, checked to be of the right kind before anything opens them
# (a pipe where a file is expected would block the run).
_RUN_FOLDERS = (checkpointing.CHECKPOINT_DIR, checkpointing.UNREADABLE_DIR, "plugins")
CURVES_FILE = "curves.png"
_RUN_FILES = (locks.LOCK_FILE, checkpointing.CONFIG_FILE, writers.JSONL_FILE, CURVES_FILE)


class _PhaseClock:
    """Seconds spent in each phase of a run, for the closing line and the benchmarks."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> float:
        """Ends `phase` now; returns its seconds."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now
        return self.seconds[phase]


def _refuse_changed_config(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
    """Refuses to resume a workdir's checkpoints with a config that would change the results
    (or the shapes): one line naming the key and both values; nothing is touched."""
    saved = checkpointing.read_config(workdir).to_dict()
    current = config.to_dict()
    changed = sorted(
        key
        for key in saved.keys() | current.keys()
        if saved.get(key) != current.get(key)
        and not config_lib.declared(key).may_change_on_resume(config)
    )
    if changed:
        # The model first: another model's fields differ too, and the first of those in
        # order ("dropout=0.0, not None") hid that the experiment itself was another.
        key = "model" if "model" in changed else changed[0]
        raise UserError(
            f"{workdir / checkpointing.CONFIG_FILE}: this workdir was trained with "
            f"{key}={saved.get(key)!r}, not {current.get(key)!r}; resume with the same config "
            "or use a new --workdir"
        )


# The checkpoint's record of the data it was trained on (`data.fingerprint`).
DATA_KEY = "data_fingerprint"


def _refuse_other_data(meta: dict, trained_on: dict, workdir: epath.Path) -> None:
    """Refuses to resume checkpoints on data other than they were trained on: data_dir may
    change on resume (the files moved), and a run resumed on other files trained on them
    without a word. Checkpoints saved before the record was kept are taken as they are."""
    saved = meta.get(DATA_KEY)
    other = saved is not None and saved != trained_on[DATA_KEY]
    if parallel.max_over_processes(int(other)):  # Every process refuses.
        raise UserError(
            f"{workdir / checkpointing.CHECKPOINT_DIR}: trained on other data "
            f"({meta.get('data_source', 'then')}: {saved}) than this run reads "
            f"({trained_on['data_source']}: {trained_on[DATA_KEY]}; images per split and a "
            "digest of their labels in order); give it the data it was trained on "
            "(--config.data_dir), or use a new --workdir"
            if other
            else f"{workdir}: another process of this run has other data than its checkpoints "
            "were trained on; its own line says which"
        )


def _refuse_configs_that_differ_between_processes(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> None:
    """Refuses, on every process of a multi-process run, configs or workdirs that differ
    between them (but for the fields that say where, on each machine): their programs
    would differ, and the first collective aborted every process without a word; their
    saves would go to different places, and every process waited in the first for ever."""
    local = config_lib.names(lambda field: field.local)
    shared = {k: v for k, v in config.to_dict().items() if k not in local}
    shared["--workdir"] = os.fspath(workdir)
    text = json.dumps(shared, sort_keys=True, default=repr).encode()
    digest = int(hashlib.sha256(text).hexdigest()[:7], 16)  # Within int32, for the gather.
    if parallel.max_over_processes(digest) != -parallel.max_over_processes(-digest):
        raise UserError(
            "the processes of this run were given different configs or workdirs; start every "
            "host with the same command and config file"
        )


def _refuse_files_of_no_run(workdir: epath.Path) -> None:
    """Refuses, before a fresh run replaces them, a config.json that is not a run's, or
    epoch records or curves without a config.json (a run writes its config before either):
    a run stopped before its first save leaves its own, which are replaced whatever they
    hold (its model's file may have moved since)."""
    if (workdir / checkpointing.CONFIG_FILE).exists():
        checkpointing.saved_config_fields(workdir)
    elif writers.JsonlLog(workdir / writers.JSONL_FILE).read():
        raise UserError(
            f"{workdir / writers.JSONL_FILE}: records of a run whose config.json is not there; "
            "move them away or use another --workdir"
        )
    elif (workdir / CURVES_FILE).exists():  # A user's picture was replaced without a word.
        raise UserError(
            f"{workdir / CURVES_FILE}: a file no run wrote (a run writes its config.json "
            "first), which this run would replace; move it away or use another --workdir"
        )


def _refuse_fewer_epochs(config: ml_collections.ConfigDict, workdir: epath.Path, saved: int):
    """Refuses a rerun asking for fewer epochs than the workdir has trained: it would train
    nothing and record a config the checkpoints do not match."""
    if config.num_epochs < saved:
        raise UserError(
            f"{workdir / checkpointing.CHECKPOINT_DIR}: holds epoch {saved}, more than "
            f"config.num_epochs={config.num_epochs}; evaluate it with --mode=eval, extend it "
            f"with --config.num_epochs={saved + 1} or more, or use a new --workdir"
        )


def _write_config(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
    """Writes config.json (process 0)."""
    if jax.process_index() == 0:
        files.write_atomically(
            workdir / checkpointing.CONFIG_FILE,
            json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n",
        )


def _print(*args) -> None:
    if jax.process_index() == 0:
        progress.show(*args)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> loop.Result:
    """Trains the config's model, evaluating after every epoch, into `workdir`.

    Rerunning on the same workdir resumes from its latest readable checkpoint.
    Writes config.json, metrics.jsonl, curves.png, TensorBoard events and checkpoints/
    (and a profiler trace of epoch `config.trace_epoch` under plugins/profile/).

    Args:
      config: a resolved experiment config (see mlp_jax.config.base_config).
      workdir: the run's folder, local or remote (gs://...); created if missing.

    Returns:
      The final state (one copy), the per-epoch records, and the seconds of each phase
      (data, state, compile, epochs, finish).

    Raises:
      UserError: bad config or data, divergence; signals.Interrupted on a terminating
        signal (SIGTERM, SIGINT, SIGHUP, ...), after the epoch in flight was saved.
    """
    # ---- Config, model, workdir, and what must be closed however the run ends.
    parallel.check_jax_settings()
    model = models.resolve_model(config)
    errors.check_plot_backend()  # Here, not at the run's last plot.
    runner = loop.make_runner(config)  # Refuses a batch the devices cannot split, first.
    clock = _PhaseClock()
    # Before each process reads its data by its own config: one failing alone would leave
    # the others waiting in the next collective.
    _refuse_configs_that_differ_between_processes(config, workdir)
    # Read and checked before the workdir is made: data that cannot be read leave nothing.
    dataset = data.load_dataset(config.data_dir, config.validation_size, config.split_seed)
    trained_on = {  # What the checkpoints record of it.
        DATA_KEY: data.fingerprint(dataset),
        "data_source": str(data.find_idx_dir(config.data_dir) or "TFDS's fashion_mnist"),
    }
    workdir = checkpointing.workdir_path(workdir)
    holder = checkpointing.runs_checkpoints_holding(workdir)
    if parallel.max_over_processes(int(holder is not None)):  # Every process refuses.
        raise UserError(
            f"{workdir}: inside the checkpoints of a run ({holder}), whose saves and rotation "
            "would meet this run's; use another --workdir"
            if holder
            else f"{workdir}: inside the checkpoints of a run on another process; its line says"
        )
    tracing = (loop.TRACE_FOLDER,) if config.trace_epoch else ()
    files.prepare_folder(workdir, folders=_RUN_FOLDERS + tracing, regular_files=_RUN_FILES)
    is_main_process = jax.process_index() == 0
    with contextlib.ExitStack() as cleanup:
        lock, refused = locks.Lock(), None
        if is_main_process:  # Before anything in the workdir is touched.
            try:
                lock = cleanup.enter_context(locks.workdir_lock(workdir))
            except UserError as e:
                refused = e
        if parallel.max_over_processes(int(refused is not None)):  # Every process refuses.
            raise refused or UserError(f"{workdir} is in use; process 0 says by whom")
        # Entered before the store, so left after its last save is written: a signal while
        # it is written (a second Ctrl-C) is one more stop request, not an exception.
        stop = cleanup.enter_context(signals.StopRequests())
        store = checkpointing.CheckpointStore(
            workdir, config.keep_checkpoints, needs=checkpointing.RUN_META
        )
        # A run that lost its lock rotates nothing: the workdir is another run's now.
        cleanup.callback(lambda: store.close(rotate=lock.lost() is None))
        if store.saved_epochs():
            _refuse_changed_config(config, workdir)
        else:
            _refuse_files_of_no_run(workdir)

        # ---- Data on the devices.
        run = loop.prepare(config, dataset, runner)
        clock.lap("data")

        # ---- State: resume from the latest readable checkpoint, or initialise.
        abstract_state = checkpointing.abstract_train_state(model, run.tx, runner.copy_sharding)
        parallel.check_state_fits(abstract_state, config)
        store.check_room_to_save(abstract_state)
        restored = store.restore_latest(abstract_state)
        resuming = restored is not None
        if resuming:
            _refuse_other_data(restored[1], trained_on, workdir)
        state = restored[0] if resuming else steps.create_train_state(model, run.tx, config.seed)
        _refuse_fewer_epochs(config, workdir, int(state.epoch))
        start_epoch = int(state.epoch)
        store.refuse_what_stands_where_it_saves(range(start_epoch + 1, config.num_epochs + 1))
        log = writers.JsonlLog(workdir / writers.JSONL_FILE)
        history = log.truncate_after(start_epoch) if is_main_process else []
        _write_config(config, workdir)  # After every file it replaces was read and accepted.
        if resuming:
            _print(f"resumed from the checkpoint of epoch {start_epoch} in {workdir}")
        elif store.set_aside_epochs():
            _print(
                f"no readable checkpoint in {workdir}: starting afresh at epoch 1 (the damaged "
                f"ones set aside earlier are in {workdir / checkpointing.UNREADABLE_DIR})"
            )
        if 0 < config.trace_epoch <= start_epoch:
            _print(
                f"config.trace_epoch={config.trace_epoch} was trained before this run resumed "
                "at its checkpoint: no trace is written (trace a later epoch, or train afresh "
                "in a new --workdir)"
            )
        writer = None
        if is_main_process:
            writer = writers.BackgroundWriter(writers.TensorBoardWriter(workdir))
            cleanup.push(_closed_after(writer.close, lambda: lock.lost() is not None))
        clock.lap("state")

        # ---- Compile once, ahead of time, so that epoch timings exclude compilation. A
        # program ends wherever a checkpoint is due, so the host holds every saved state.
        checkpoint_epochs = range(
            config.checkpoint_every_epochs, config.num_epochs + 1, config.checkpoint_every_epochs
        )
        started = loop.start(run, state, checkpoint_epochs)
        _print(
            f"{config.model}: {run.num_train} training images, {runner.num_devices} device(s) "
            f"({jax.devices()[0].platform}, parallel={runner.mode}), "
            f"compiled in {clock.lap('compile'):.2f} s"
        )

        # ---- Train: one compiled program per config.epochs_per_program epochs, each epoch
        # validated inside it; host work only between epochs, saving and stopping only
        # between programs.
        # Orbax (a tenth of a second to import), first needed for the first save, and
        # matplotlib (a third), for the last plot (in a terminal), are imported meanwhile,
        # while the compiled epochs hold the devices, not the interpreter. A failure there
        # is the save's or the plot's own, raised by it.
        later = [checkpointing.ORBAX, *([_PLOTS] if is_main_process else [])]
        warming = threading.Thread(target=_import_quietly, args=later)
        warming.start()
        cleanup.callback(warming.join)
        board = progress.EpochBoard(title=config.model.split(":")[-1])
        board.update(history)
        state = started.state
        first_of_a_program = True
        for finished in loop.epochs(run, started.compiled, state, started.plan, trace_dir=workdir):
            record = finished.record
            epoch = record["epoch"]
            if first_of_a_program:  # Before any of its records is written.
                lost = lock.lost()
                if parallel.max_over_processes(int(lost is not None)):
                    raise UserError(
                        lost or f"{workdir}: process 0 no longer holds its lock; its line says why"
                    )
            first_of_a_program = finished.state is not None
            history.append(record)
            if is_main_process:
                log.write(history)
                writer.write_scalars(epoch, {k: v for k, v in record.items() if k != "epoch"})
            board.update(history)
            _print(
                f"epoch {epoch:3d}/{config.num_epochs}  train_loss {record['train_loss']:.4f}  "
                f"val_loss {record['val_loss']:.4f}  val_acc {record['val_acc']:.4f}  "
                f"examples/s {record['examples_per_sec']:,.0f}"
            )
            if finished.state is None:  # Inside a program: the host acts at its end.
                continue
            state = finished.state
            last = epoch == config.num_epochs
            stop_signal = stop.agreed_signal()
            if last or stop_signal or epoch in checkpoint_epochs:
                meta = {
                    "val_acc": record["val_acc"],
                    "steps_per_epoch": run.steps_per_epoch,
                    **trained_on,
                }
                store.save(runner.unreplicate(state), meta)
            if stop_signal and not last:
                _plot(workdir, history, config)
                checkpoints = workdir / checkpointing.CHECKPOINT_DIR
                raise signals.Interrupted(
                    f"stopped by {signals.name(stop_signal)} after epoch {epoch}/"
                    f"{config.num_epochs}; its checkpoint is in {checkpoints}; rerun the same "
                    "command to resume",
                    128 + stop_signal,
                )
        clock.lap("epochs")
        _plot(workdir, history, config)
        # A signal in the last epoch (or as a run with none left compiled): the run is whole
        # and saved, and the stop is still said, not dropped (a loop of runs went on; trial 11).
        if stop_signal := stop.agreed_signal():
            raise signals.Interrupted(
                f"stopped by {signals.name(stop_signal)} as the run ended: all "
                f"{config.num_epochs} epochs are trained and saved in "
                f"{workdir / checkpointing.CHECKPOINT_DIR}",
                128 + stop_signal,
            )
    clock.lap("finish")  # The plot, the last checkpoint's write and the writer's flush.
    _print("phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in clock.seconds.items()))
    return loop.Result(runner.unreplicate(state), history, clock.seconds)


def _closed_after(close, workdir_lost):
    """An ExitStack exit that calls `close`, unless the run is ending because its workdir
    was lost (`workdir_lost()`): its last writes would go into whatever stands at the name
    now (TensorBoard's events file did, into a new folder, or a user's through a link), or
    fail and replace the line that says why."""

    def exit_(_type, error, _traceback) -> bool:
        if error is None or not workdir_lost():
            close()
        return False

    return exit_


_PLOTS = "mlp_jax.plots"


def _import_quietly(*names: str) -> None:
    for name in names:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _plot(workdir: epath.Path, history: list[dict], config) -> None:
    if jax.process_index() == 0 and history:
        plots = importlib.import_module(_PLOTS)
        plots.plot_curves(history, workdir / CURVES_FILE, title=config.model.split(":")[-1])


def evaluate_workdir(workdir: str | os.PathLike, data_dir: str | None = None) -> dict:
    """Restores a workdir's latest checkpoint and evaluates it on the test split.

    Args:
      workdir: a training workdir.
      data_dir: the IDX folder; by default the one the run was trained from.

    Returns:
      {"step", "epoch", "test_loss", "test_acc", "params_fingerprint"}.
    """
    model, state, config = checkpointing.restore_workdir(workdir)
    del model
    source = (
        ("--data_dir", data.FROM_CONFIG[1])
        if data_dir
        else (
            f"the data_dir in {files.as_path(workdir) / checkpointing.CONFIG_FILE}",
            "if the files moved, pass --data_dir=FOLDER where they are now",
        )
    )
    _, test = data.load_fashion_mnist(data_dir or config.data_dir, source=source)
    evaluate = jax.jit(
        functools.partial(
            steps.evaluate,
            batch_size=config.eval_batch_size,
            compute_dtype=config.compute_dtype,
        )
    )
    return {
        "step": int(state.step),
        "epoch": int(state.epoch),
        **metrics.to_floats(evaluate(state, jax.device_put(test)), "test_"),
        "params_fingerprint": checkpointing.params_fingerprint(state.params),
    }
