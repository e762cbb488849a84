"""Checkpoints in-process: exact resumption, corrupt or foreign checkpoints, read-only
restore. (Kills, signals and a busy workdir, which need whole processes, are in
tests/integration/checkpointing_cli_test.py.)

The runs here use the tuned recipe's features (dropout, augmentation, label smoothing, AdamW
with a cosine schedule), whose random streams and optimiser state are what a resumption most
easily gets wrong.
"""

import asyncio
import gc
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from helpers import (
    BEST_FEATURES,
    LABELS_MAGIC,
    RESUMABLE_EPOCHS,
    ROOT,
    largest_file,
    params_fingerprint,
    resumable_config,
    tiny_config,
    train_uninterrupted,
    tree_listing,
    write_idx,
)

from mlp_jax import checkpointing, data, files, models, optim, signals, steps, sweep, train
from mlp_jax.errors import UserError

EPOCHS = RESUMABLE_EPOCHS


@pytest.fixture(scope="module")
def uninterrupted(synthetic_dir, tmp_path_factory):
    return train_uninterrupted(synthetic_dir, tmp_path_factory.mktemp("uninterrupted"))


def test_resume_from_an_earlier_checkpoint_repeats_the_run_bit_for_bit(
    synthetic_dir, tmp_path, uninterrupted
):
    reference_dir, reference = uninterrupted
    workdir = tmp_path / "run"
    shutil.copytree(reference_dir, workdir)
    for epoch in (2, 3):
        shutil.rmtree(workdir / "checkpoints" / str(epoch))
    # metrics.jsonl still holds epochs 2 and 3, as after a kill before their checkpoints were
    # saved: spoil them, so that only a resumption that cuts them away passes.
    log = workdir / "metrics.jsonl"
    spoiled = [json.loads(line) for line in log.read_text().splitlines()]
    for record in spoiled[1:]:
        record["val_acc"] = -1.0
    log.write_text("".join(json.dumps(r) + "\n" for r in spoiled))

    resumed = train.train_and_evaluate(resumable_config(synthetic_dir), workdir)
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(reference.state), strict=True):
        np.testing.assert_array_equal(a, b)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["val_acc"] for r in records] == [r["val_acc"] for r in reference.history]


@pytest.mark.slow
def test_best_mlp_ingredients_resume_bit_for_bit(synthetic_dir, tmp_path):
    # Erasing, MixUp or CutMix, the parameters' moving average, LayerNorm and skips: every
    # draw depends on (seed, step) and the average lives in the optimiser state.
    config = tiny_config(synthetic_dir, num_epochs=EPOCHS, **BEST_FEATURES)
    reference = train.train_and_evaluate(config, tmp_path / "uninterrupted")
    shutil.copytree(tmp_path / "uninterrupted", tmp_path / "resumed")
    for epoch in (2, 3):
        shutil.rmtree(tmp_path / "resumed" / "checkpoints" / str(epoch))
    resumed = train.train_and_evaluate(config, tmp_path / "resumed")
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(reference.state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed.history == [
        {**r, "train_seconds": s["train_seconds"], "examples_per_sec": s["examples_per_sec"]}
        for r, s in zip(reference.history, resumed.history, strict=True)
    ]


def test_a_stop_in_the_last_epoch_is_raised_once_the_run_is_saved(
    synthetic_dir, tmp_path, monkeypatch
):
    # It was dropped: the run returned as if nothing had come, and a loop of runs went on; a
    # stop raised as an Exception was taken by a loop's `except Exception` (trial 11).
    monkeypatch.setattr(signals.StopRequests, "agreed_signal", lambda self: signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="as the run ended: all 1 epochs are") as raised:
        train.train_and_evaluate(tiny_config(synthetic_dir), tmp_path)
    assert isinstance(raised.value, signals.Interrupted) and raised.value.exit_code == 130
    monkeypatch.undo()
    assert int(checkpointing.restore_workdir(tmp_path).state.epoch) == 1


def test_changed_config_on_resume_is_refused(synthetic_dir, tmp_path):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1), tmp_path)
    with pytest.raises(UserError, match=r"trained with lr=0.1, not 0.2"):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2, lr=0.2), tmp_path)


@pytest.mark.parametrize(
    "saved, fragment",
    [
        ("[1, 2]", "a JSON list without the model a run records"),
        ('{"eval_batch_size": null}', "config.eval_batch_size=None is invalid"),
        ('{"num_hiddens": "32"}', "config.num_hiddens='32' is invalid: must be a whole number"),
        # The model's own line, at its first call, named no file.
        ('{"activation": "bogus"}', "config.activation='bogus' is unknown; choose from"),
        ('{"weight_init": "bogus"}', "config.weight_init='bogus' is unknown; choose from"),
    ],
)
def test_a_config_json_that_is_no_runs_is_one_line_naming_it(
    synthetic_dir, tmp_path, saved, fragment
):
    config = tiny_config(synthetic_dir).to_dict()
    text = saved if saved.startswith("[") else json.dumps({**config, **json.loads(saved)})
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(UserError, match="config.json: not a run's config") as raised:
        checkpointing.read_config(tmp_path)
    assert fragment in str(raised.value)


def test_a_workdir_that_is_a_file_is_one_line_from_python_too(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(UserError, match="run is a file"):
        checkpointing.restore_workdir(tmp_path / "run")


def test_a_config_json_keeps_what_the_library_reads_of_it(synthetic_dir, tmp_path):
    # A field the library has dropped since the run is passed over, not refused.
    config = tiny_config(synthetic_dir)
    (tmp_path / "config.json").write_text(json.dumps({**config.to_dict(), "dropped": 1}))
    assert checkpointing.read_config(tmp_path).to_dict() == config.to_dict()


_EPOCH_RECORD = '{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "val_acc": 0.8}\n'


@pytest.mark.parametrize(
    "name, foreign, fragment",
    [
        ("config.json", '{"name": "my project", "version": 3}\n', "not a run's config"),
        ("metrics.jsonl", _EPOCH_RECORD, "whose config.json is not there"),
        ("metrics.jsonl", '{"epoch": 1, "loss": 0.5}\n', "line 1: not an epoch's record"),
        ("curves.png", "my picture\n", "curves.png: a file no run wrote"),  # Replaced before.
    ],
)
def test_a_workdir_holding_files_of_no_run_is_refused_and_they_are_kept(
    synthetic_dir, tmp_path, name, foreign, fragment
):
    (tmp_path / name).write_text(foreign)
    with pytest.raises(UserError, match=fragment):
        train.train_and_evaluate(tiny_config(synthetic_dir), tmp_path)
    assert {p.name for p in tmp_path.iterdir()} <= {name, ".lock", "checkpoints"}  # Empty.
    assert (tmp_path / name).read_text() == foreign


@pytest.mark.parametrize("model_since", ["the same", "moved"])
def test_a_run_stopped_before_its_first_save_is_run_again_over_its_own_files(
    synthetic_dir, tmp_path, model_since
):
    config = tiny_config(synthetic_dir)
    saved = config.to_dict()
    if model_since == "moved":  # Its file renamed since: the rerun names the new one.
        saved["model"] = f"{tmp_path / 'renamed_since.py'}:MLP"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "metrics.jsonl").write_text("")
    assert train.train_and_evaluate(config, tmp_path).history[-1]["epoch"] == 1
    assert json.loads((tmp_path / "config.json").read_text()) == config.to_dict()


def test_a_config_json_whose_model_cannot_be_loaded_here_is_the_models_line(tmp_path):
    # Not "not a run's config": the file is fine, its model's file was moved since the run.
    config = tiny_config(tmp_path)
    config.model = f"{tmp_path / 'moved.py'}:MLP"
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(UserError) as raised:
        checkpointing.read_config(tmp_path)
    assert "cannot be loaded" in str(raised.value)
    assert "not a run's config" not in str(raised.value)


def test_a_resume_on_other_data_is_refused_and_on_the_same_data_moved_goes_on(
    synthetic_dir, tmp_path
):
    # data_dir may change on resume, and a run resumed on other files (10,000 images for
    # 60,000, or labels in another order) trained on them without a word (trial 8).
    run = tmp_path / "run"
    train.train_and_evaluate(tiny_config(synthetic_dir), run)
    other = shutil.copytree(synthetic_dir, tmp_path / "other")
    labels = data.load_fashion_mnist(str(synthetic_dir), use_tfds=False)[0].labels
    write_idx(other / data._FILE_STEMS["train"][1], labels[::-1].astype(np.uint8), LABELS_MAGIC)

    def kept():
        names = ("config.json", "metrics.jsonl")
        return tree_listing(run / "checkpoints"), [(run / f).read_bytes() for f in names]

    before = kept()
    named = r"checkpoints: trained on other data \(.*synthetic.*\) than this run reads \(.*other"
    with pytest.raises(UserError, match=named):
        train.train_and_evaluate(tiny_config(other, num_epochs=2), run)
    assert kept() == before
    moved = shutil.copytree(synthetic_dir, tmp_path / "moved")
    assert train.train_and_evaluate(tiny_config(moved, num_epochs=2), run).history[-1]["epoch"] == 2


def test_a_run_inside_another_runs_checkpoints_is_refused_before_anything_is_written(
    synthetic_dir, tmp_path
):
    # Accepted, its saves and the other run's met: Orbax's tracebacks, an epoch lost, and
    # the other run refused every rerun (trial 8).
    (tmp_path / "config.json").write_text('{"model": "experiments/mlp_concise.py:MLP"}')
    inner = tmp_path / "checkpoints" / "25"
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match=r"checkpoints/25: inside the checkpoints of a run"):
        train.train_and_evaluate(tiny_config(synthetic_dir), inner)
    assert not inner.exists()
    # Beside another project's config.json, a folder named checkpoints is no run's.
    (tmp_path / "config.json").write_text('{"editor": "vim"}')
    assert train.train_and_evaluate(tiny_config(synthetic_dir), inner).history[-1]["epoch"] == 1


def test_a_folder_made_where_a_run_saves_next_is_one_line_and_kept(synthetic_dir, tmp_path):
    # Made mid-run (by hand, or by another program), it was Orbax's StepAlreadyExistsError
    # in a traceback.
    config = tiny_config(synthetic_dir)
    model, tx = models.resolve_model(config), optim.make_optimizer(config, steps_per_epoch=1)
    state = steps.create_train_state(model, tx, 0)
    store = checkpointing.CheckpointStore(tmp_path, keep=2)
    try:
        store.save(state.replace(epoch=jax.numpy.int32(2)), {"steps_per_epoch": 1})
        (tmp_path / "checkpoints" / "3").mkdir()
        (tmp_path / "checkpoints" / "3" / "mine").write_text("mine")
        with pytest.raises(UserError, match=r"checkpoints/3: made while this run trained"):
            store.save(state.replace(epoch=jax.numpy.int32(3)), {"steps_per_epoch": 1})
    finally:
        store.close()
    assert (tmp_path / "checkpoints" / "3" / "mine").read_text() == "mine"
    assert (tmp_path / "checkpoints" / "2").is_dir()


@pytest.mark.parametrize(
    "standing, said",
    [
        ("a file", "a file stands where this run saves epoch 4; nothing was trained"),
        ("a link leading nowhere", "a link to .*gone, which is not there"),
    ],
)
def test_what_stands_where_a_run_will_save_is_refused_before_it_trains(
    synthetic_dir, tmp_path, standing, said
):
    # A file at checkpoints/4 was "made while this run trained", after epoch 4 had trained;
    # a link leading nowhere failed the save in Orbax's threads, 103 lines (trial 12).
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    path = tmp_path / "checkpoints" / "4"
    if standing == "a file":
        path.write_text("mine")
    else:
        path.symlink_to(tmp_path / "gone")
    before = tree_listing(tmp_path / "checkpoints")
    with pytest.raises(UserError, match=rf"checkpoints/4: {said}"):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=5), tmp_path)
    assert tree_listing(tmp_path / "checkpoints") == before
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2  # Nothing trained.


def test_a_newest_checkpoint_that_is_a_link_leading_nowhere_is_said_not_passed_over(
    synthetic_dir, tmp_path
):
    # Its disk not mounted: eval gave the previous epoch's accuracy without a word, and
    # training trained epoch 3 again, then failed its save in tracebacks (trial 12).
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    shutil.move(tmp_path / "checkpoints" / "3", tmp_path / "elsewhere")
    (tmp_path / "checkpoints" / "3").symlink_to(tmp_path / "unmounted" / "3")
    line = r"checkpoints/3: a link to .*unmounted/3, which is not there \(a disk not mounted\?\)"
    with pytest.raises(UserError, match=line):
        checkpointing.restore_workdir(tmp_path)
    with pytest.raises(UserError, match=line):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=4), tmp_path)
    assert (tmp_path / "elsewhere").is_dir() and not (tmp_path / "checkpoints_unreadable").exists()


def test_a_checkpoints_folder_linked_into_another_runs_workdir_is_refused(synthetic_dir, tmp_path):
    # The second run resumed from the first's checkpoint, saved into its folder and rotated
    # away its good checkpoints 4 and 5 (trial 12).
    first, second = tmp_path / "first", tmp_path / "second"
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), first)
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1), second)
    shutil.rmtree(second / "checkpoints")
    (second / "checkpoints").symlink_to(first / "checkpoints")
    before = tree_listing(first)
    line = rf"second/checkpoints: a link into the workdir of another run \({first}\)"
    with pytest.raises(UserError, match=line):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=4), second)
    with pytest.raises(UserError, match=line):
        checkpointing.restore_workdir(second)
    assert tree_listing(first) == before
    # Checkpoints moved to another disk, linked back, are the run's own.
    (second / "checkpoints").unlink()
    shutil.move(first / "checkpoints", tmp_path / "disk")
    (first / "checkpoints").symlink_to(tmp_path / "disk")
    assert int(checkpointing.restore_workdir(first).state.epoch) == 2


@pytest.mark.parametrize(
    "listed, problem",
    [
        ("[]", "a JSON list, not an object"),
        ('{"commit_timestamp_nsecs": 1000000000000000000000000000000}', "its commit_timestamp"),
        ('{"item_handlers": 5}', "its item_handlers are neither an object nor a string"),
    ],
)
def test_a_checkpoints_listed_metadata_orbax_cannot_list_is_one_line_naming_it(
    synthetic_dir, tmp_path, listed, problem
):
    # Orbax's traceback as it listed the checkpoints, in every command, naming no file; the
    # file is not needed to restore (trial 12).
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    (tmp_path / "checkpoints" / "1" / "_CHECKPOINT_METADATA").write_text(listed)
    with pytest.raises(UserError, match=rf"checkpoints/1/_CHECKPOINT_METADATA: {problem}"):
        checkpointing.restore_workdir(tmp_path)


def test_a_checkpoints_listed_metadata_that_is_no_json_is_passed_over_quietly(
    synthetic_dir, tmp_path, caplog
):
    # Orbax parses it as it lists, logs an ERROR 3 to 6 times a command, and goes on.
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    (tmp_path / "checkpoints" / "2" / "_CHECKPOINT_METADATA").write_text("")
    with caplog.at_level(logging.INFO):
        assert int(checkpointing.restore_workdir(tmp_path).state.epoch) == 2
    assert not [r for r in caplog.records if "_CHECKPOINT_METADATA" in r.getMessage()]


def test_a_set_aside_name_already_taken_takes_the_next_free_one(synthetic_dir, tmp_path):
    # "error: a file: File exists", naming no path, the run unable to resume (trial 12).
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    (tmp_path / "checkpoints" / "2" / "meta" / "metadata").write_text("{}")  # Damaged.
    taken = time.time()
    for second in range(-2, 30):  # Every name of the next half minute, as a clock set back.
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(taken + second))
        (tmp_path / "checkpoints_unreadable" / f"2-{stamp}").mkdir(parents=True, exist_ok=True)
    earlier = len(list((tmp_path / "checkpoints_unreadable").iterdir()))
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    set_aside = sorted((tmp_path / "checkpoints_unreadable").iterdir())
    assert len(set_aside) == earlier + 1
    assert [p.name for p in set_aside if (p / "meta").is_dir()][0].endswith("-2")


@pytest.mark.parametrize("name", ["br[x]", "back\\slash", "gl*?"])
def test_a_workdir_name_orbax_or_tensorstore_would_misread_is_refused_first(
    synthetic_dir, tmp_path, name
):
    # Trained with status 0 into checkpoints no process could read (Orbax's glob took "[x]"
    # for a pattern, TensorStore the backslash for a separator); the next run set them aside.
    # "gl*?" deleted the save in progress of the run "gl12" beside it (trial 10).
    beside = tmp_path / "gl12" / "checkpoints" / "7.orbax-checkpoint-tmp-1"
    beside.mkdir(parents=True)
    with pytest.raises(UserError, match=r"in the path of a folder of checkpoints.*without them"):
        train.train_and_evaluate(tiny_config(synthetic_dir), tmp_path / name)
    assert not (tmp_path / name).exists() and beside.is_dir()
    # A study's populations too, named by its --workdir before any population.
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path / name))}: .*without them"):
        sweep.train_population([tiny_config(synthetic_dir)], None, cache_dir=tmp_path / name)


def test_a_run_moved_under_a_name_with_brackets_is_still_read(synthetic_dir, tmp_path):
    # Only a save there goes wrong; reading was refused by the first mend (the review).
    train.train_and_evaluate(tiny_config(synthetic_dir), tmp_path / "run")
    moved = (tmp_path / "run").rename(tmp_path / "old[1]")
    assert int(checkpointing.restore_workdir(moved).state.epoch) == 1
    with pytest.raises(UserError, match=r"'\\\\' in the path of a folder of checkpoints"):
        checkpointing.CheckpointStore(tmp_path / "old\\1", keep=1, read_only=True)


@pytest.mark.parametrize(
    "met_in, error",
    [
        ("_restore", FileNotFoundError),
        # Orbax's listing reads each checkpoint's metadata: 1 eval, predict or export in 90
        # failed there (trial 8), naming the folder that went as the fault.
        ("_new_manager", FileNotFoundError),
        ("_new_manager", NotADirectoryError),
    ],
)
def test_a_read_only_restore_lists_again_when_a_running_run_rotates_one_out(
    synthetic_dir, tmp_path, monkeypatch, met_in, error
):
    # --mode=eval of a run in progress: the newest checkpoint it listed may go mid-read.
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    newest = tmp_path / "checkpoints" / "2"
    original = getattr(checkpointing.CheckpointStore, met_in)

    def rotated_out_meanwhile(store, *args):
        if newest.exists():
            shutil.rmtree(newest)
            raise error(2, os.strerror(2), str(newest))
        return original(store, *args)

    monkeypatch.setattr(checkpointing.CheckpointStore, met_in, rotated_out_meanwhile)
    assert int(checkpointing.restore_workdir(tmp_path).state.epoch) == 1


def test_checkpoint_of_another_model_is_refused_not_set_aside(synthetic_dir, tmp_path):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1), tmp_path)
    before = tree_listing(tmp_path / "checkpoints")
    other = tiny_config(synthetic_dir, num_hiddens=64)
    model, tx = models.resolve_model(other), optim.make_optimizer(other, steps_per_epoch=235)
    store = checkpointing.CheckpointStore(tmp_path, keep=3)
    try:
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        with pytest.raises(UserError, match="saved by a model of other shapes"):
            store.restore_latest(checkpointing.abstract_train_state(model, tx, sharding))
    finally:
        store.close()
    assert tree_listing(tmp_path / "checkpoints") == before
    assert not (tmp_path / "checkpoints_unreadable").exists()


@pytest.mark.slow
def test_restored_workdir_continues_with_the_runs_own_schedule(synthetic_dir, tmp_path):
    # Still warming up after 2 of 5 warm-up epochs: the learning rate depends on how many
    # steps an epoch has, which the restored optimiser must know.
    config = tiny_config(synthetic_dir, num_epochs=2, warmup_epochs=5)
    result = train.train_and_evaluate(config, tmp_path)
    restored = checkpointing.restore_workdir(tmp_path).state
    ones = jax.tree.map(np.ones_like, result.state.params)
    expected, _ = result.state.tx.update(ones, result.state.opt_state, result.state.params)
    updates, _ = restored.tx.update(ones, restored.opt_state, restored.params)
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fingerprint_covers_every_part_of_the_state(uninterrupted):
    _, reference = uninterrupted
    state = reference.state
    original = checkpointing.fingerprint(state)
    leaves, treedef = jax.tree.flatten(state)
    for i, leaf in enumerate(leaves):
        changed = list(leaves)
        changed[i] = np.asarray(leaf).copy()
        changed[i].reshape(-1)[0] += 1
        assert checkpointing.fingerprint(jax.tree.unflatten(treedef, changed)) != original, i


def test_checkpoint_whose_state_does_not_match_its_fingerprint_is_not_used(synthetic_dir, tmp_path):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    # The meta of epoch 2 now vouches for another RNG key: the parameters still match, so a
    # fingerprint of the parameters alone would accept this state.
    meta_file = tmp_path / "checkpoints" / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    state = checkpointing.restore_workdir(tmp_path).state
    meta["state_fingerprint"] = checkpointing.fingerprint(state.replace(rng=state.rng + 1))
    meta_file.write_text(json.dumps(meta))
    assert int(checkpointing.restore_workdir(tmp_path).state.epoch) == 1


# Each of the last five was stuck on that checkpoint, the previous one never tried: a lost
# metadata file read as "saved by a model of other shapes"; the others tracebacks (a
# KeyError of Orbax's or of the meta, an array's chunk that does not decompress).
@pytest.mark.parametrize(
    "damage",
    [
        "truncate",
        "tamper",
        "metadata_lost",
        "metadata_emptied",
        "meta_without_fingerprint",
        "data_overwritten",
        "data_removed",
        # Trial 12: an empty tree and an undescribed array were tracebacks, or "saved by a
        # model of other shapes"; a listing of arrays that is no object, a traceback; an
        # edited meta, restore_workdir's KeyError or TypeError.
        "tree_emptied",
        "array_undescribed",
        "arrays_listed_as_a_list",
        "meta_without_steps_per_epoch",
        "meta_steps_per_epoch_a_string",
        "meta_nested_too_deep",  # A RecursionError's traceback, "not known to be damaged".
        "description_nested_too_deep",
    ],
)
def test_damaged_newest_checkpoint_falls_back_to_the_previous(
    synthetic_dir, tmp_path, damage, capsys
):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    newest = largest_file(tmp_path / "checkpoints" / "3" / "state")
    raw = bytearray(newest.read_bytes())
    if damage == "truncate":
        newest.write_bytes(raw[: len(raw) // 2])
    elif damage == "metadata_lost":
        (tmp_path / "checkpoints" / "3" / "state" / "_METADATA").unlink()
    elif damage == "metadata_emptied":
        (tmp_path / "checkpoints" / "3" / "state" / "_METADATA").write_text("{}")
    elif damage == "meta_without_fingerprint":
        (tmp_path / "checkpoints" / "3" / "meta" / "metadata").write_text("{}")
    elif damage == "data_overwritten":
        newest.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    elif damage == "data_removed":
        newest.unlink()
    elif damage in ("tree_emptied", "array_undescribed"):
        described = tmp_path / "checkpoints" / "3" / "state" / "_METADATA"
        tree = json.loads(described.read_text())
        kept = [] if damage == "tree_emptied" else list(tree["tree_metadata"])[1:]
        tree["tree_metadata"] = {key: tree["tree_metadata"][key] for key in kept}
        described.write_text(json.dumps(tree))
    elif damage == "description_nested_too_deep":
        deep = "[" * 200_000 + "]" * 200_000
        (tmp_path / "checkpoints" / "3" / "state" / "_METADATA").write_text(deep)
    elif damage == "arrays_listed_as_a_list":
        (tmp_path / "checkpoints" / "3" / "state" / "array_metadatas" / "process_0").write_text(
            "[]"
        )
    elif damage.startswith("meta_"):
        meta_file = tmp_path / "checkpoints" / "3" / "meta" / "metadata"
        meta = json.loads(meta_file.read_text())
        if damage == "meta_without_steps_per_epoch":
            del meta["steps_per_epoch"]
        else:
            meta["steps_per_epoch"] = "abc"
        deep = "[" * 200_000 + "]" * 200_000
        meta_file.write_text(deep if damage == "meta_nested_too_deep" else json.dumps(meta))
    else:
        raw[len(raw) // 2] ^= 0xFF
        newest.write_bytes(bytes(raw))
    # Reading (eval, notebooks) skips it and leaves it where it is.
    assert int(checkpointing.restore_workdir(tmp_path).state.epoch) == 2
    assert (tmp_path / "checkpoints" / "3").is_dir()
    assert not (tmp_path / "checkpoints_unreadable").exists()
    # Training again sets it aside, resumes from epoch 2 and writes a sound epoch 3.
    capsys.readouterr()
    again = train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    assert int(again.state.epoch) == 3
    assert len(list((tmp_path / "checkpoints_unreadable").iterdir())) == 1
    said = capsys.readouterr().out
    assert "resumed from the checkpoint of epoch 2" in said and "starting afresh" not in said


def test_the_evidence_of_damage_is_one_line_cut_between_words(tmp_path):
    error = checkpointing.Damaged("a long reason, " * 30 + "\nand a second line")
    evidence = checkpointing.damage_evidence(error, tmp_path)
    assert evidence.startswith("a long reason, a long") and evidence.endswith(" ...")
    assert len(evidence) <= 204 and evidence[:-4].endswith(("a", "long", "reason,"))


def test_training_removes_the_folders_of_unfinished_saves(synthetic_dir, tmp_path):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1), tmp_path)
    unfinished = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1795888000"
    unfinished.mkdir()
    (unfinished / "partial").write_bytes(b"a save a kill interrupted")
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    assert not unfinished.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1", "2"]


def test_a_store_with_nothing_saved_yet_imports_no_orbax(tmp_path):
    """A run starting afresh imports Orbax at its first save (see checkpointing.ORBAX), a
    tenth of a second off its start-up; its checkpoints folder is made at once all the same."""
    script = (
        "import sys\n"
        "from mlp_jax import checkpointing, train\n"
        f"store = checkpointing.CheckpointStore({str(tmp_path)!r}, keep=3)\n"
        "assert store.restore_latest({}) is None and store.saved_epochs() == []\n"
        "store.close()\n"
        "print(sorted(name for name in sys.modules if name.startswith('orbax')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "checkpoints").is_dir()


def test_no_readable_checkpoint_is_one_clear_error(synthetic_dir, tmp_path):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1, keep_checkpoints=1), tmp_path)
    for f in (tmp_path / "checkpoints" / "1" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    with pytest.raises(UserError, match="no readable checkpoint.*start afresh"):
        checkpointing.restore_workdir(tmp_path)


# Failures of a restore that say nothing of the checkpoint's own bytes: a library's or the
# runtime's error, the environment's (a limit on open files, a lost mount), a user's
# interrupt, words of damage about something else. None of them may move a checkpoint.
def _raised_while_handling(error: Exception, context: Exception) -> Exception:
    error.__context__, error.__suppress_context__ = context, True  # `raise error from None`
    return error


NOT_DAMAGE = {
    "a_library_error": lambda folder: RuntimeError("Unable to cast Python instance of <str>"),
    "out_of_open_files": lambda folder: OSError(24, "Too many open files"),
    "a_lost_mount": lambda folder: OSError(5, "Input/output error"),
    "out_of_memory": lambda folder: MemoryError(),
    "a_type_error_of_a_bug": lambda folder: TypeError("unsupported operand"),
    "a_status_word_about_something_else": lambda folder: ValueError(
        "NOT_FOUND: no plugin named 'zarr3' in the registry"
    ),
    "another_file_missing": lambda folder: FileNotFoundError(2, "No such file", "/etc/gone"),
    "damage_words_of_an_error_it_replaced": lambda folder: _raised_while_handling(
        RuntimeError("the restore was cancelled"), ValueError(f"DATA_LOSS: {folder}/state")
    ),
}


@pytest.mark.parametrize("failure", sorted(NOT_DAMAGE))
def test_a_restore_failure_that_proves_no_damage_moves_nothing(
    synthetic_dir, tmp_path, monkeypatch, failure
):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    before = tree_listing(tmp_path / "checkpoints")
    error = NOT_DAMAGE[failure](tmp_path / "checkpoints" / "2")

    def fail(self, epoch, abstract_state):
        raise error

    monkeypatch.setattr(checkpointing.CheckpointStore, "_restore", fail)
    with pytest.raises(type(error)):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    monkeypatch.undo()
    assert tree_listing(tmp_path / "checkpoints") == before
    assert not (tmp_path / "checkpoints_unreadable").exists()
    resumed = train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    assert int(resumed.state.epoch) == 3  # The ordinary rerun resumes from epoch 2.


@pytest.mark.parametrize("cause", ["permission", "a_bucket_gone_silent"])
def test_a_checkpoint_this_process_cannot_read_is_one_line_and_moves_nothing(
    synthetic_dir, tmp_path, monkeypatch, cause
):
    from fsspec.exceptions import FSTimeoutError  # noqa: PLC0415

    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    before = tree_listing(tmp_path / "checkpoints")
    newest = largest_file(tmp_path / "checkpoints" / "2" / "state")
    read_bytes = checkpointing.files.read_bytes

    def denied(path):
        if path != newest:
            return read_bytes(path)
        if cause == "permission":
            raise PermissionError(13, "Permission denied", str(path))
        raise FSTimeoutError  # gcsfs's, through every retry.

    def fail(self, epoch, abstract_state):  # As TensorStore fails on a file it cannot open.
        raise ValueError(f"DATA_LOSS: Error reading {newest}")

    monkeypatch.setattr(checkpointing.files, "read_bytes", denied)
    monkeypatch.setattr(checkpointing.CheckpointStore, "_restore", fail)
    # A bucket's silence is its own line (errors.cloud_storage_line), not the file's.
    raised = (
        pytest.raises(UserError, match="cannot be read by this process.*nothing was moved")
        if cause == "permission"
        else pytest.raises(FSTimeoutError)
    )
    with raised:
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    monkeypatch.undo()
    assert tree_listing(tmp_path / "checkpoints") == before
    assert not (tmp_path / "checkpoints_unreadable").exists()


def test_a_run_starting_afresh_beside_set_aside_checkpoints_says_so(
    synthetic_dir, tmp_path, capsys
):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1, keep_checkpoints=1), tmp_path)
    newest = largest_file(tmp_path / "checkpoints" / "1" / "state")
    newest.write_bytes(newest.read_bytes()[:10])
    with pytest.raises(UserError, match="every one is damaged.*a training rerun will start"):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    assert len(list((tmp_path / "checkpoints_unreadable").iterdir())) == 1
    capsys.readouterr()
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    assert "starting afresh at epoch 1" in capsys.readouterr().out


def _raised_in_orbax() -> Exception:
    try:
        ocp.type_handlers.get_type_handler(object)
    except ValueError as e:
        return e
    raise AssertionError("Orbax raised nothing")


def _left_unretrieved(error: Exception) -> None:
    """A future that failed with `error`, nobody awaiting it: asyncio logs "Future exception
    was never retrieved" when it is collected."""
    loop = asyncio.new_event_loop()
    loop.create_future().set_exception(error)
    loop.close()
    gc.collect()


def test_a_failed_restores_stray_reads_report_nothing_and_other_reports_still_go_through(
    uninterrupted, tmp_path, monkeypatch, caplog
):
    # Orbax closes its event loop at the first failed read; the reads still in flight then
    # report "Event loop is closed" or their own failure, with tracebacks, on stderr
    # (hundreds of lines in a run resumed from an older checkpoint).
    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted[0], workdir)
    for folder in (workdir / "checkpoints").iterdir():
        if folder.name.isdigit():
            newest = largest_file(folder / "state")
            newest.write_bytes(newest.read_bytes()[:10])
    time.sleep(0.5)  # The stray reads of earlier tests' restores are not this test's.
    gc.collect()
    reports, in_place = [], []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    asyncio_logger = logging.getLogger("asyncio")
    monkeypatch.setattr(asyncio_logger, "filters", [])  # As in a process that never restored.
    restore = checkpointing.CheckpointStore._restore

    def watched_restore(self, *args):  # Some reports come before a failed restore returns.
        in_place.append(getattr(sys.unraisablehook, "drops_stray_reads", False))
        in_place.append(bool(asyncio_logger.filters))
        return restore(self, *args)

    monkeypatch.setattr(checkpointing.CheckpointStore, "_restore", watched_restore)
    for _ in range(3):
        with pytest.raises(UserError, match="every one is damaged"):
            checkpointing.restore_workdir(workdir)
    assert in_place and all(in_place)
    time.sleep(0.5)  # The stray reads finish on TensorStore's threads...
    gc.collect()  # ...and their abandoned coroutines are finalised.
    assert [str(report.exc_value)[:60] for report in reports] == []

    # Each way a stray read was seen reported, for a read failed in Orbax, a TensorStore
    # failure naming the checkpoints as its futures hand it over (unraised), and two other
    # failures: an unraisable exception (its report's traceback may be elsewhere), and
    # asyncio's logger.
    def tensorstore_error(kvstore) -> Exception:
        return ts.open({"driver": "zarr", "kvstore": kvstore}).exception()

    def through_asyncio(kvstore) -> Exception:  # Raised in asyncio's frames alone.
        loop = asyncio.new_event_loop()
        try:
            opened = asyncio.ensure_future(
                ts.open({"driver": "zarr", "kvstore": kvstore}), loop=loop
            )
            loop.run_until_complete(asyncio.wait([opened]))
            return opened.exception()
        finally:
            loop.close()

    stray = [
        _raised_in_orbax(),
        tensorstore_error({"driver": "file", "path": str(workdir / "checkpoints" / "9")}),
        # Through asyncio's frames alone (a task's _wrap_awaitable): 1 in 29 (trial 12).
        through_asyncio({"driver": "file", "path": str(workdir / "checkpoints")}),
    ]
    elsewhere = [tensorstore_error("memory://"), ValueError("not a stray read")]
    for error in stray + elsewhere:
        sys.unraisablehook(SimpleNamespace(exc_value=error, exc_traceback=None))
        _left_unretrieved(error)
    assert [report.exc_value for report in reports] == elsewhere
    logged = [r.exc_info[1] for r in caplog.records if r.name == "asyncio" and r.exc_info]
    assert logged == elsewhere


def test_eval_mode_matches_the_last_val_acc(uninterrupted):
    workdir, reference = uninterrupted
    result = train.evaluate_workdir(workdir)
    assert result["epoch"] == EPOCHS
    assert result["test_acc"] == pytest.approx(reference.history[-1]["val_acc"], abs=1e-6)
    assert result["params_fingerprint"] == params_fingerprint(reference)


def test_restore_workdir_predicts_what_evaluation_counted(uninterrupted, synthetic_dir):
    workdir, reference = uninterrupted
    model, state, config = checkpointing.restore_workdir(workdir)
    assert config.num_hiddens == 32
    _, test = data.load_fashion_mnist(str(synthetic_dir), use_tfds=False)
    predicted = np.asarray(steps.predict(state, model.apply, test.images))
    accuracy = float((predicted == test.labels).mean())
    assert accuracy == pytest.approx(reference.history[-1]["val_acc"], abs=1e-6)
    assert {data.CLASS_NAMES[i] for i in predicted} <= set(data.CLASS_NAMES)


@pytest.mark.parametrize("part", ["rng", "step", "opt_state"])
def test_checkpoint_whose_stored_state_was_changed_is_not_used(synthetic_dir, tmp_path, part):
    # Epoch 2's state is replaced on disk by one whose parameters are the same but whose
    # `part` differs, its meta left as saved: a fingerprint of the parameters alone would
    # take this state for the one that was saved.
    config = tiny_config(synthetic_dir, num_epochs=2, optimizer="momentum")
    train.train_and_evaluate(config, tmp_path / "run")
    state = checkpointing.restore_workdir(tmp_path / "run").state
    changed = {
        "rng": lambda s: s.replace(rng=s.rng + 1),
        "step": lambda s: s.replace(step=s.step + 1),
        "opt_state": lambda s: s.replace(opt_state=jax.tree.map(lambda x: x + 1, s.opt_state)),
    }[part](state)
    other = checkpointing.CheckpointStore(tmp_path / "other", keep=1)
    other.save(changed, {"steps_per_epoch": 235})
    other.close()
    saved = tmp_path / "run" / "checkpoints" / "2" / "state"
    shutil.rmtree(saved)
    shutil.copytree(tmp_path / "other" / "checkpoints" / "2" / "state", saved)
    assert int(checkpointing.restore_workdir(tmp_path / "run").state.epoch) == 1


def test_resuming_a_schedule_with_another_length_is_refused(synthetic_dir, tmp_path):
    # A cosine schedule spans num_epochs: more epochs would change the learning rate of the
    # epochs already trained. A constant learning rate may be extended.
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1, schedule="cosine"), tmp_path)
    with pytest.raises(UserError, match=r"trained with num_epochs=1, not 2"):
        train.train_and_evaluate(
            tiny_config(synthetic_dir, num_epochs=2, schedule="cosine"), tmp_path
        )
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1), tmp_path / "constant")
    extended = train.train_and_evaluate(
        tiny_config(synthetic_dir, num_epochs=2), tmp_path / "constant"
    )
    assert [r["epoch"] for r in extended.history] == [1, 2]


def test_a_signal_while_the_last_checkpoint_is_written_loses_nothing(
    synthetic_dir, tmp_path, monkeypatch
):
    # Ctrl-C during the final save (and the rotation): the stop handler still holds, so it
    # is a stop request, and the save completes; then it is delivered, not dropped (a
    # SIGTERM there ended the run with status 0 and no line; trial 12).
    close = checkpointing.CheckpointStore.close
    closed = []

    def interrupted_close(self, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        close(self, **kwargs)
        closed.append(True)

    monkeypatch.setattr(checkpointing.CheckpointStore, "close", interrupted_close)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path)
    assert closed == [True]  # Delivered once the save was whole.
    monkeypatch.undo()
    restored = checkpointing.restore_workdir(tmp_path).state  # Its fingerprint checked.
    assert int(restored.epoch) == 2


def test_the_listing_check_passes_over_what_orbax_does_not_read(tmp_path):
    # What a rotation leaves as it goes (a folder without its metadata yet, or gone) and
    # what a user leaves (a file named like an epoch) are not the listing's to refuse.
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "3").mkdir(parents=True)
    (checkpoints / "4").write_text("a user's notes")
    (checkpoints / "5").mkdir()
    (checkpoints / "5" / "notes").symlink_to(tmp_path / "nowhere")  # Restore's to judge.
    checkpointing._check_checkpoint_metadata(files.as_path(checkpoints))
    checkpointing._check_checkpoint_metadata(files.as_path(tmp_path / "gone"))
    os.mkfifo(checkpoints / "3" / "_CHECKPOINT_METADATA")
    with pytest.raises(UserError, match=r"3/_CHECKPOINT_METADATA is a named pipe"):
        checkpointing._check_checkpoint_metadata(files.as_path(checkpoints))


def test_a_workdir_whose_name_leaves_no_room_for_its_checkpoints_is_refused(tmp_path, monkeypatch):
    # A workdir of 4,024 bytes trained, then its save failed in Orbax's threads: 476 lines.
    # The limit is lowered here to stand for a name that long.
    monkeypatch.setattr(os, "pathconf", lambda *_: len(str(tmp_path)) + 100)
    with pytest.raises(UserError, match=r"leaves too little of the system's \d+ .* shorter"):
        checkpointing.CheckpointStore(tmp_path / "run", keep=1)
    assert not (tmp_path / "run").exists()
    checkpointing.CheckpointStore(tmp_path / "run", keep=1, read_only=True)  # Reads, though.


# The move, and the failure, in the call the store wraps: Orbax's save; its wait for the save
# before (once checkpoint 1 is whole, the store's own); a failure where nothing moved keeps
# its traceback. Orbax's threads failed ("Checkpoint directory does not exist"), and the run
# ended in their traceback.
@pytest.mark.parametrize(
    "failing, after, moves",
    [("save", "", True), ("wait_until_finished", "1", True), ("save", "", False)],
    ids=["save", "wait_for_the_save_before", "not_moved"],
)
def test_a_save_failing_as_the_workdir_is_moved_away_is_one_line(
    synthetic_dir, tmp_path, monkeypatch, failing, after, moves
):
    workdir = tmp_path / "run"
    real = getattr(ocp.CheckpointManager, failing)

    def move_then_fail(manager, *args, **kwargs):
        if workdir.exists() and (workdir / "checkpoints" / after / "meta").exists() == bool(after):
            if moves:
                workdir.rename(tmp_path / "moved")
            raise ValueError("Checkpoint directory does not exist")
        return real(manager, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, failing, move_then_fail)
    moved = "run/checkpoints: moved while this run saved into it; the save in flight"
    raised = (UserError, moved) if moves else (ValueError, "Checkpoint directory does not")
    with pytest.raises(raised[0], match=raised[1]):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), workdir)


def test_another_processs_shortage_of_room_is_named_as_its(tmp_path, monkeypatch):
    store = checkpointing.CheckpointStore(tmp_path, keep=1)
    monkeypatch.setattr(checkpointing.parallel, "max_over_processes", lambda value: 1)
    another = "another process of this run cannot save a checkpoint there; its own line says"
    with pytest.raises(UserError, match=another):
        store.check_room_to_save({"w": jax.ShapeDtypeStruct((4,), np.float32)})
