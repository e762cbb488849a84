"""The in-memory run loop: the one loop `train_and_evaluate`, the benchmarks and the studies
share."""

import shutil

import jax
import numpy as np
import pytest
from helpers import count_traces, small_dataset, tiny_config

from mlp_jax import checkpointing, data, loop, models, steps, train
from mlp_jax.errors import UserError


def _without_timings(history):
    return [
        {k: v for k, v in r.items() if k not in ("train_seconds", "examples_per_sec")}
        for r in history
    ]


def test_fit_is_the_run_of_train_and_evaluate_without_its_files(synthetic_dir, tmp_path):
    config = tiny_config(synthetic_dir, num_epochs=2, dropout=0.1, augment_shift=1)
    on_disk = train.train_and_evaluate(config, tmp_path)
    in_memory = loop.fit(config, data.load_dataset(str(synthetic_dir)))
    for a, b in zip(jax.tree.leaves(in_memory.state), jax.tree.leaves(on_disk.state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _without_timings(in_memory.history) == _without_timings(on_disk.history)
    assert set(in_memory.phase_seconds) == {"state", "compile", "train", "loop"}
    assert in_memory.phase_seconds["loop"] >= in_memory.phase_seconds["train"]
    assert in_memory.phase_seconds["train"] == pytest.approx(
        sum(r["train_seconds"] for r in in_memory.history)
    )


def test_fit_continues_from_a_state_as_one_longer_run():
    dataset = small_dataset()
    first = loop.fit(tiny_config("", num_epochs=1), dataset)
    continued = loop.fit(tiny_config("", num_epochs=2), dataset, state=first.state)
    whole = loop.fit(tiny_config("", num_epochs=2), dataset)
    assert [r["epoch"] for r in continued.history] == [2]
    for a, b in zip(jax.tree.leaves(continued.state), jax.tree.leaves(whole.state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_diverging_fit_stops_with_one_line():
    with pytest.raises(UserError, match=r"training diverged: .* in epoch 1; .*lower --config.lr"):
        loop.fit(tiny_config("", lr=1e30, num_epochs=2), small_dataset())


def test_the_runs_split_seed_chooses_its_validation_images(synthetic_dir, tmp_path):
    runs = [
        train.train_and_evaluate(
            tiny_config(synthetic_dir, validation_size=1_000, split_seed=seed), tmp_path / str(seed)
        )
        for seed in (0, 1)
    ]
    assert runs[0].history[0]["val_loss"] != runs[1].history[0]["val_loss"]


# 5 does not divide the epoch's 24 steps.
@pytest.mark.parametrize("unroll", [4, pytest.param(5, marks=pytest.mark.slow)])
def test_an_unrolled_epoch_trains_bit_for_bit_as_the_rolled_one(unroll):
    dataset = small_dataset()
    features = {"num_epochs": 2, "dropout": 0.1, "augment_shift": 1, "momentum": 0.9}
    rolled = loop.fit(tiny_config("", **features), dataset)
    unrolled = loop.fit(tiny_config("", scan_unroll=unroll, **features), dataset)
    for a, b in zip(jax.tree.leaves(unrolled.state), jax.tree.leaves(rolled.state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _without_timings(unrolled.history) == _without_timings(rolled.history)


def test_a_program_ends_at_its_length_at_every_host_epoch_around_the_trace_and_at_the_end():
    config = tiny_config("", num_epochs=10, epochs_per_program=4)
    assert loop.program_plan(config, 1) == [4, 4, 2]
    assert loop.program_plan(config, 1, host_epochs={5}) == [4, 1, 4, 1]
    assert loop.program_plan(config, 7) == [4]
    config.trace_epoch = 3
    assert loop.program_plan(config, 1) == [2, 1, 4, 3]
    assert loop.program_plan(tiny_config("", num_epochs=3), 1) == [1, 1, 1]


def test_several_epochs_in_one_program_train_bit_for_bit_as_one_each():
    dataset = small_dataset()
    features = {"num_epochs": 3, "dropout": 0.1, "augment_shift": 1, "momentum": 0.9}
    alone = loop.fit(tiny_config("", **features), dataset)
    # Programs of 2 epochs and of 1.
    fused = loop.fit(tiny_config("", epochs_per_program=2, **features), dataset)
    for a, b in zip(jax.tree.leaves(fused.state), jax.tree.leaves(alone.state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _without_timings(fused.history) == _without_timings(alone.history)


@pytest.mark.parametrize("epochs_per_program", [1, 2])
def test_a_workdir_moved_mid_run_stops_it_before_it_writes_a_second_one(
    synthetic_dir, tmp_path, monkeypatch, epochs_per_program
):
    # Its next save made a new folder of the old name, holding the rest of the run without
    # its config.json, which every later command refused; the run ended with status 0.
    workdir, moved = tmp_path / "run", tmp_path / "moved"
    save = checkpointing.CheckpointStore.save

    def save_then_move(store, state, meta):
        save(store, state, meta)
        store.manager.wait_until_finished()
        workdir.rename(moved)
        workdir.mkdir()  # A user's new folder of that name: TensorBoard's last file went in.

    monkeypatch.setattr(checkpointing.CheckpointStore, "save", save_then_move)
    every = epochs_per_program  # A program ends at each checkpoint.
    config = tiny_config(
        synthetic_dir, num_epochs=4, epochs_per_program=every, checkpoint_every_epochs=every
    )
    with pytest.raises(UserError, match="run: moved or removed while this run wrote it"):
        train.train_and_evaluate(config, workdir)
    assert not any(workdir.iterdir()) and (moved / "checkpoints" / str(every)).is_dir()
    # Nothing of the next program written anywhere: the records are those saved.
    assert len((moved / "metrics.jsonl").read_text().splitlines()) == epochs_per_program


def test_a_workdir_moved_before_its_first_record_gets_nothing_at_its_old_name(
    synthetic_dir, tmp_path, monkeypatch
):
    # TensorBoard's writer, closing, made its events file in the user's new folder there.
    workdir = tmp_path / "run"
    start = loop.start

    def compile_then_move(*args, **kwargs):  # While the first program is compiled.
        started = start(*args, **kwargs)
        workdir.rename(tmp_path / "moved")
        workdir.mkdir()
        return started

    monkeypatch.setattr(loop, "start", compile_then_move)
    with pytest.raises(UserError, match="run: moved or removed while this run wrote it"):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), workdir)
    assert not any(workdir.iterdir())


def test_a_checkpoints_folder_moved_mid_run_stops_it_before_a_new_one_is_made(
    synthetic_dir, tmp_path, monkeypatch
):
    # Orbax made a new checkpoints/ for the next save: the run split in two, status 0.
    workdir = tmp_path / "run"
    save = checkpointing.CheckpointStore.save

    def save_then_move(store, state, meta):
        save(store, state, meta)
        store.manager.wait_until_finished()
        (workdir / "checkpoints").rename(workdir / "moved")

    monkeypatch.setattr(checkpointing.CheckpointStore, "save", save_then_move)
    moved = "run/checkpoints: moved while this run saved into it"
    with pytest.raises(UserError, match=moved):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), workdir)
    assert not (workdir / "checkpoints").exists() and (workdir / "moved" / "1").is_dir()


def test_a_run_whose_workdir_moved_rotates_nothing_of_what_stands_at_its_name(
    synthetic_dir, tmp_path, monkeypatch
):
    # Stopping, it deleted the checkpoints past its own `keep` in another run's workdir made
    # at the old name.
    workdir, moved = tmp_path / "run", tmp_path / "moved"
    save = checkpointing.CheckpointStore.save

    def save_then_move(store, state, meta):
        save(store, state, meta)
        store.manager.wait_until_finished()
        if int(state.epoch) == 2:
            workdir.rename(moved)
            shutil.copytree(moved, workdir)  # Another run's, at the old name: 1, 2 and 3.
            shutil.copytree(workdir / "checkpoints" / "2", workdir / "checkpoints" / "3")

    monkeypatch.setattr(checkpointing.CheckpointStore, "save", save_then_move)
    config = tiny_config(synthetic_dir, num_epochs=4, keep_checkpoints=2)
    with pytest.raises(UserError, match="run: moved or removed while this run wrote it"):
        train.train_and_evaluate(config, workdir)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1", "2", "3"]


@pytest.mark.parametrize("dataset", ["x", None])
def test_fit_given_no_dataset_says_what_it_takes(dataset):
    # "'str' object has no attribute 'train'", from deep inside.
    with pytest.raises(TypeError, match="not a mlp_jax.data.Dataset: give data.load_dataset"):
        loop.fit(tiny_config(""), dataset)


def test_fit_checks_the_datasets_contents_before_it_trains():
    # Labels past 9 trained to a NaN loss, then "diverged ... lower --config.lr".
    good = small_dataset()
    labels = np.array(good.train.labels, copy=True)
    labels[3] = 12
    bad = good._replace(train=good.train._replace(labels=labels))
    with pytest.raises(ValueError, match="dataset.train.labels hold 12, outside the 10 classes"):
        loop.fit(tiny_config(""), bad)


def test_a_trace_of_an_epoch_before_the_resume_is_said_to_be_not_written(
    synthetic_dir, tmp_path, capsys
):
    train.train_and_evaluate(tiny_config(synthetic_dir), tmp_path)
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2, trace_epoch=1), tmp_path)
    assert "config.trace_epoch=1 was trained before this run resumed" in capsys.readouterr().out
    assert not (tmp_path / "plugins").exists()


def test_a_trace_folder_that_cannot_take_files_is_refused_before_the_run_trains(
    synthetic_dir, tmp_path
):
    # The profiler's failure to write there was a traceback, the traced epoch lost.
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "profile").write_text("a file where the traces go")
    with pytest.raises(UserError, match=r"plugins/profile is a file where a folder is needed"):
        train.train_and_evaluate(tiny_config(synthetic_dir, trace_epoch=1), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_trace_that_cannot_be_written_is_a_warning_and_the_epoch_is_kept(
    synthetic_dir, tmp_path, monkeypatch, caplog
):
    # A trace refused once the run trained (a disk filled, say): the epoch was lost.
    def refused():
        raise jax.errors.JaxRuntimeError("PERMISSION_DENIED: plugins/profile/x: not allowed")

    with monkeypatch.context() as patched:
        patched.setattr(jax.profiler, "stop_trace", refused)
        result = train.train_and_evaluate(tiny_config(synthetic_dir, trace_epoch=1), tmp_path)
    assert int(result.state.epoch) == 1 and (tmp_path / "checkpoints" / "1").is_dir()
    assert "the trace could not be written into" in caplog.text
    assert "PERMISSION_DENIED" in caplog.text
    # The failed trace is over: the next run's (a notebook's) starts.
    jax.profiler.start_trace(str(tmp_path / "next"))
    jax.profiler.stop_trace()


@pytest.mark.slow
def test_a_run_of_several_epochs_per_program_saves_every_checkpoint_due_and_resumes(
    synthetic_dir, tmp_path
):
    features = {"num_epochs": 5, "checkpoint_every_epochs": 2, "keep_checkpoints": 5}
    config = tiny_config(synthetic_dir, epochs_per_program=4, **features)
    fused = train.train_and_evaluate(config, tmp_path / "fused")
    saved = sorted(int(p.name) for p in (tmp_path / "fused" / "checkpoints").iterdir())
    assert saved == [2, 4, 5]
    config.num_epochs = 8  # Resumed from epoch 5: epoch 6 (a checkpoint's), then 7 and 8.
    assert loop.program_plan(config, 6, [6, 8]) == [1, 2]
    resumed = train.train_and_evaluate(config, tmp_path / "fused")
    alone = loop.fit(
        tiny_config(synthetic_dir, **{**features, "num_epochs": 8}),
        data.load_dataset(str(synthetic_dir)),
    )
    assert [r["epoch"] for r in fused.history] == [1, 2, 3, 4, 5]
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(alone.state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _without_timings(resumed.history) == _without_timings(alone.history)


def test_a_program_of_several_epochs_that_diverges_names_its_first_diverged_epoch():
    with pytest.raises(UserError, match=r"training diverged: .* in epoch 1; .*lower --config.lr"):
        loop.fit(tiny_config("", lr=1e30, num_epochs=3, epochs_per_program=3), small_dataset())


@pytest.mark.parametrize("per_program", [1, 2])
@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_fit_in_a_parallel_mode_on_one_device_equals_fit_without_one(mode, per_program):
    # Several devices: tests/integration/multidevice_test.py; here the layouts of one.
    dataset = small_dataset()
    plain = loop.fit(tiny_config("", num_epochs=2, parallel="none"), dataset)
    config = tiny_config("", num_epochs=2, parallel=mode, epochs_per_program=per_program)
    wrapped = loop.fit(config, dataset)
    for a, b in zip(jax.tree.leaves(wrapped.state), jax.tree.leaves(plain.state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert [r["epoch"] for r in wrapped.history] == [1, 2]


@pytest.mark.parametrize("per_program", [1, 2])
def test_a_run_traces_its_epoch_once_per_length_of_program(monkeypatch, per_program):
    # A program made anew for every epoch (or every program) would count one per epoch.
    traced = count_traces(monkeypatch)
    config = tiny_config("", num_epochs=5, epochs_per_program=per_program)
    loop.fit(config, small_dataset(with_test=False))
    assert len(traced) == len(set(loop.program_plan(config, 1)))  # Of [1] * 5, or [2, 2, 1].


def test_a_second_run_of_an_equal_config_traces_and_compiles_nothing(monkeypatch):
    # A notebook's rerun, a study's runs one after another: equal configs give the same
    # optimiser and runner (and equal models), so jit's caches serve the second run whole.
    # (An optimiser or runner made anew would trace the epoch and the initialisation again.)
    config = tiny_config("", num_epochs=2, num_hiddens=24)
    dataset = small_dataset(with_test=False)
    first = loop.fit(config, dataset)
    traced = count_traces(monkeypatch)
    initialisations = steps._create_train_state._cache_size()
    again = loop.fit(tiny_config("", num_epochs=2, num_hiddens=24), dataset)
    assert traced == [] and steps._create_train_state._cache_size() == initialisations
    for a, b in zip(jax.tree.leaves(again.state), jax.tree.leaves(first.state), strict=True):
        np.testing.assert_array_equal(a, b)
    # A config that differs gets its own optimiser, and its own programs.
    other = loop.fit(tiny_config("", num_epochs=2, num_hiddens=24, lr=0.05), dataset)
    assert traced
    kernel = jax.tree.leaves(first.state.params)[-1]
    assert not np.array_equal(jax.tree.leaves(other.state.params)[-1], kernel)


def test_an_implicit_copy_into_a_compiled_program_fails():
    # The training split left on the host: copied in silently at every epoch, were it not for
    # the transfer guard around the program's call.
    config = tiny_config("", num_epochs=1)
    run = loop.prepare(config, small_dataset(with_test=False))
    state = steps.create_train_state(models.resolve_model(config), run.tx, config.seed)
    started = loop.start(run, state)
    on_host = run._replace(train_data=jax.device_get(run.train_data))
    with pytest.raises(jax.errors.JaxRuntimeError, match="Disallowed host-to-device transfer"):
        next(loop.epochs(on_host, started.compiled, started.state, started.plan))
