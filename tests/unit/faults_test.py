"""The fault trial, in-process: faults a user can make in the config, the model, the data and
the workdir, each row run against a workdir that holds a good run, asserting one line that
names the key or the file, and the workdir's checkpoints byte for byte unchanged.

(Faults that need a whole process, signals, streams and flags, are in
tests/integration/cli_test.py and checkpointing_cli_test.py.)
"""

import contextlib
import errno
import json
import math
import os
import resource
import shutil
import types

import jax
import numpy as np
import pytest
from helpers import ROOT, TRAINED_EPOCHS, tiny_config, tree_listing

from mlp_jax import checkpointing, errors, export, files, predict, train
from mlp_jax.config import load_experiment
from mlp_jax.errors import UserError, os_error_line

# (config field, bad value, what the one line says). Each row changes one field of the tiny
# config that trained the workdir.
CONFIG_FAULTS = [
    ("lr", math.nan, "config.lr=nan is invalid: must be a finite number"),
    ("lr", math.inf, "config.lr=inf is invalid: must be a finite number"),
    ("lr", -math.inf, "config.lr=-inf is invalid: must be a finite number"),
    ("lr", 0.0, "config.lr=0.0 is invalid: must be > 0"),
    ("lr", -0.1, "config.lr=-0.1 is invalid: must be > 0"),
    ("momentum", math.nan, "config.momentum=nan is invalid: must be a finite number"),
    ("weight_decay", math.inf, "config.weight_decay=inf is invalid: must be a finite number"),
    ("weight_decay", -0.1, "config.weight_decay=-0.1 is invalid: must be >= 0"),
    ("label_smoothing", math.nan, "config.label_smoothing=nan is invalid: must be a finite number"),
    ("label_smoothing", 1.0, "config.label_smoothing=1.0 is invalid: must be in [0, 1)"),
    ("ema_decay", math.nan, "config.ema_decay=nan is invalid: must be a finite number"),
    ("ema_decay", 1.0, "config.ema_decay=1.0 is invalid: must be in [0, 1)"),
    ("ema_decay", -0.1, "config.ema_decay=-0.1 is invalid: must be in [0, 1)"),
    ("label_smoothing", -0.1, "config.label_smoothing=-0.1 is invalid: must be in [0, 1)"),
    ("dropout", -0.1, "config.dropout=-0.1 is invalid: must be in [0, 1)"),
    ("augment_erase", -0.1, "config.augment_erase=-0.1 is invalid: must be in [0, 1]"),
    ("augment_shift", -1, "config.augment_shift=-1 is invalid: must be in 0..8"),
    ("augment_rotate", -1.0, "config.augment_rotate=-1.0 is invalid"),
    ("augment_scale", -0.1, "config.augment_scale=-0.1 is invalid: must be in [0, 1)"),
    ("epochs_per_program", 0, "config.epochs_per_program=0 is invalid: must be >= 1"),
    ("init_scale", math.nan, "config.init_scale=nan is invalid: must be a finite number"),
    ("dropout", math.nan, "config.dropout=nan is invalid: must be a finite number"),
    ("dropout", 1.0, "config.dropout=1.0 is invalid: must be in [0, 1)"),
    ("augment_rotate", math.inf, "config.augment_rotate=inf is invalid: must be a finite number"),
    ("augment_rotate", 200.0, "config.augment_rotate=200.0 is invalid"),
    ("augment_scale", math.nan, "config.augment_scale=nan is invalid: must be a finite number"),
    ("augment_scale", 1.0, "config.augment_scale=1.0 is invalid: must be in [0, 1)"),
    ("augment_elastic", -1.0, "config.augment_elastic=-1.0 is invalid: must be >= 0"),
    ("augment_erase", 1.5, "config.augment_erase=1.5 is invalid: must be in [0, 1]"),
    ("augment_shift", 9, "config.augment_shift=9 is invalid: must be in 0..8"),
    ("mixup_alpha", math.nan, "config.mixup_alpha=nan is invalid: must be a finite number"),
    ("mixup_alpha", -0.2, "config.mixup_alpha=-0.2 is invalid: must be >= 0"),
    # Cast to float32 as inf: the run "diverged", and its lr was blamed (trial 10).
    ("init_scale", 1e300, "config.init_scale=1e+300 is invalid: must be in [0, 3.4e38]"),
    ("init_scale", -0.01, "config.init_scale=-0.01 is invalid: must be in [0, 3.4e38]"),
    ("cutmix_alpha", -1.0, "config.cutmix_alpha=-1.0 is invalid: must be >= 0"),
    ("seed", -1, "config.seed=-1 is invalid: must be a whole number in 0..4294967295"),
    ("seed", 2**32, "config.seed=4294967296 is invalid"),
    ("split_seed", -1, "config.split_seed=-1 is invalid"),
    ("split_seed", 2**40, "config.split_seed=1099511627776 is invalid"),
    ("batch_size", 0, "config.batch_size=0 is invalid: must be >= 1"),
    ("scan_unroll", 0, "config.scan_unroll=0 is invalid: must be >= 1"),
    ("eval_batch_size", 0, "config.eval_batch_size=0 is invalid: must be >= 1"),
    ("num_epochs", -1, "config.num_epochs=-1 is invalid: must be in 0..1000000"),
    ("validation_size", -1, "config.validation_size=-1 is invalid: must be >= 0"),
    ("warmup_epochs", -1, "config.warmup_epochs=-1 is invalid: must be in 0..1000000"),
    ("num_hiddens", 0, "config.num_hiddens=0 is invalid: must be >= 1"),
    ("num_layers", 0, "config.num_layers=0 is invalid: must be >= 1"),
    ("optimizer", "rmsprop", "config.optimizer='rmsprop' is invalid"),
    ("schedule", "linear", "config.schedule='linear' is invalid"),
    ("parallel", "xmap", "config.parallel='xmap' is invalid"),
    ("compute_dtype", "float16", "config.compute_dtype='float16' is invalid"),
    ("norm", "batch", "config.norm='batch' is invalid"),
    ("checkpoint_every_epochs", 0, "config.checkpoint_every_epochs=0 is invalid"),
    ("keep_checkpoints", 0, "config.keep_checkpoints=0 is invalid: must be >= 1"),
    ("num_devices", -1, "config.num_devices=-1 is invalid: must be >= 0"),
    ("num_devices", 64, "config.num_devices=64, but only 1 devices exist"),
    ("trace_epoch", -1, "config.trace_epoch=-1 is invalid: must be in 0..3; 0 traces nothing"),
    ("activation", "swish2", "config.activation='swish2' is unknown"),
    ("weight_init", "orthogonal", "config.weight_init='orthogonal' is unknown"),
    ("num_outputs", 5, "gives float32 logits of shape (2, 5) for 2 images"),
    ("num_outputs", 5, "set config.num_outputs=10 (it is 5)"),
    ("model", "experiments/nope.py:MLP", "experiments/nope.py: no such file"),
    ("model", "experiments/mlp_concise.py:NoSuchModel", "defines no 'NoSuchModel'"),
    # Both were "...raised ModuleNotFoundError: ...; fix that file" (trial 11).
    ("model", "no_such_package.models:MLP", "no module no_such_package.models is installed"),
    ("model", "experiments/mlp_concise:MLPConcise", "(e.g. 'experiments/mlp_concise.py:MLPC"),
    ("model", "mlp_jax.models:ACTIVATIONS", "is not a Flax module class"),
    ("model", ":MLP", "config.model=':MLP' names no model: give it as 'PATH.py:ClassName'"),
    ("model", "experiments/mlp_concise.py", "names no model"),
    ("validation_size", 1000, "trained with validation_size=0, not 1000"),
    ("validation_size", 10**6, "validation_size=1000000 must lie in 1..5999"),
    ("lr", 0.2, "trained with lr=0.1, not 0.2; resume with the same config"),
]


@pytest.fixture(scope="module")
def trained(synthetic_dir, tmp_path_factory):
    """A workdir holding a good run of the tiny config; no row may change its checkpoints."""
    workdir = tmp_path_factory.mktemp("good") / "run"
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=TRAINED_EPOCHS), workdir)
    return workdir


def _assert_refused_in_one_line(run, fragment: str) -> str:
    with pytest.raises(UserError) as raised:
        run()
    line = str(raised.value)
    assert "\n" not in line and fragment in line, line
    return line


@pytest.mark.parametrize(
    "key, value, fragment",
    CONFIG_FAULTS,
    ids=lambda v: repr(v)[:40],
)
def test_a_bad_config_field_is_one_line_and_touches_no_checkpoint(
    trained, synthetic_dir, key, value, fragment
):
    config = tiny_config(synthetic_dir, num_epochs=TRAINED_EPOCHS + 1)
    config[key] = value
    before = tree_listing(trained / "checkpoints")
    _assert_refused_in_one_line(lambda: train.train_and_evaluate(config, trained), fragment)
    assert tree_listing(trained / "checkpoints") == before


class _Linear:
    """Sources of models that break the contract, each a file of its own."""

    RAISES_AT_IMPORT = "raise RuntimeError('this file is broken')\n"
    NEEDS_A_FIELD = (
        "import flax.linen as nn\n\n\nclass Model(nn.Module):\n    width: int\n\n"
        "    @nn.compact\n    def __call__(self, x, train=False):\n"
        "        return nn.Dense(10)(x)\n"
    )
    RAISES_AT_INIT = (
        "import flax.linen as nn\n\n\nclass Model(nn.Module):\n"
        "    @nn.compact\n    def __call__(self, x, train=False):\n"
        "        raise ValueError('no logits today')\n"
    )
    INTEGER_LOGITS = (
        "import flax.linen as nn\nimport jax.numpy as jnp\n\n\nclass Model(nn.Module):\n"
        "    @nn.compact\n    def __call__(self, x, train=False):\n"
        "        return jnp.round(nn.Dense(10)(x)).astype(jnp.int32)\n"
    )
    NNX_NEEDS_A_FIELD = (
        "from flax import nnx\n\n\nclass Model(nnx.Module):\n"
        "    def __init__(self, width: int, *, rngs: nnx.Rngs):\n"
        "        self.out = nnx.Linear(784, 10, rngs=rngs)\n\n"
        "    def __call__(self, x, train=False):\n        return self.out(x)\n"
    )
    NO_TRAIN_ARGUMENT = (  # The train step calls it with train=True.
        "import flax.linen as nn\n\n\nclass Model(nn.Module):\n"
        "    @nn.compact\n    def __call__(self, x):\n"
        "        return nn.Dense(10)(x)\n"
    )
    ONE_LOGIT_AN_IMAGE = (
        "import flax.linen as nn\n\n\nclass Model(nn.Module):\n"
        "    @nn.compact\n    def __call__(self, x, train=False):\n"
        "        return nn.Dense(1)(x)[:, 0]\n"
    )
    # Each passed the check, then: a KeyError traceback; a traceback after the workdir was
    # written; a run of NaN validation losses and an export unlike its model.json.
    NO_PARAMETERS = (
        "import flax.linen as nn\n\n\nclass Model(nn.Module):\n"
        "    @nn.compact\n    def __call__(self, x, train=False):\n"
        "        return x[:, :10]\n"
    )
    TWO_ROWS_WHATEVER_THE_BATCH = (
        "import flax.linen as nn\n\n\nclass Model(nn.Module):\n"
        "    @nn.compact\n    def __call__(self, x, train=False):\n"
        "        return nn.Dense(10)(x)[:2]\n"
    )
    IMPORTS_WHAT_IS_NOT_INSTALLED = "import no_such_dependency\n"
    FEWER_CLASSES_IN_EVALUATION = (
        "import flax.linen as nn\n\n\nclass Model(nn.Module):\n"
        "    @nn.compact\n    def __call__(self, x, train=False):\n"
        "        h = nn.Dense(10)(x)\n        return h if train else h[:, :5]\n"
    )


@pytest.mark.parametrize(
    "source, fragment",
    [
        (_Linear.RAISES_AT_IMPORT, "raised RuntimeError: this file is broken; fix that file"),
        (_Linear.IMPORTS_WHAT_IS_NOT_INSTALLED, "No module named 'no_such_dependency'; install"),
        (_Linear.NEEDS_A_FIELD, "cannot be built from the config (TypeError:"),
        (_Linear.NNX_NEEDS_A_FIELD, "cannot be built from the config (TypeError: missing"),
        (_Linear.RAISES_AT_INIT, "fails on a batch of images (ValueError: no logits today)"),
        (_Linear.INTEGER_LOGITS, "gives int32 logits of shape (2, 10)"),
        (_Linear.ONE_LOGIT_AN_IMAGE, "gives float32 logits of shape (2,) for 2 images"),
        (_Linear.NO_TRAIN_ARGUMENT, "unexpected keyword argument 'train'"),
        (_Linear.NO_PARAMETERS, "has no parameters to train"),
        (_Linear.TWO_ROWS_WHATEVER_THE_BATCH, "gives float32 logits of shape (2, 10) for 3 i"),
        (_Linear.FEWER_CLASSES_IN_EVALUATION, "of shape (2, 5) for 2 images in evaluation"),
    ],
    ids=[
        "import",
        "import_not_installed",
        "field",
        "nnx_field",
        "init",
        "dtype",
        "shape",
        "no_train_argument",
        "no_parameters",
        "batch_dependent",
        "evaluation_shape",
    ],
)
def test_a_model_that_breaks_the_contract_is_one_line_before_anything_compiles(
    trained, synthetic_dir, tmp_path, source, fragment
):
    path = tmp_path / f"model_{abs(hash(source))}.py"
    path.write_text(source)
    config = tiny_config(synthetic_dir)
    for key in ("num_hiddens", "num_outputs", "num_layers", "activation", "weight_init"):
        del config[key]
    for key in ("init_scale", "dropout", "norm", "residual"):
        del config[key]
    config.model = f"{path}:Model"
    _assert_refused_in_one_line(lambda: train.train_and_evaluate(config, tmp_path / "w"), fragment)
    assert not (tmp_path / "w").exists()  # Refused before the workdir was made.


@pytest.mark.parametrize(
    "damage, fragment",
    [
        ("workdir_is_a_file", "is a file, not a folder"),
        ("checkpoints_is_a_file", "checkpoints is a file where a folder is needed"),
        ("lock_is_a_folder", ".lock is a folder where a file is needed"),
        ("name_too_long", "too long for the file system"),
        ("not_writable", "cannot be written"),
        ("data_dir_empty", "lacks the Fashion-MNIST IDX files"),
        ("data_file_truncated", "train-labels-idx1-ubyte: truncated"),
    ],
)
def test_a_bad_path_is_one_line_naming_it(
    trained, synthetic_dir, tmp_path, monkeypatch, damage, fragment
):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    config = tiny_config(synthetic_dir, num_epochs=TRAINED_EPOCHS + 1)
    if damage == "workdir_is_a_file":
        workdir = tmp_path / "a_file"
        workdir.write_text("")
    elif damage == "checkpoints_is_a_file":
        workdir = tmp_path / "fresh"
        workdir.mkdir()
        (workdir / "checkpoints").write_text("")
    elif damage == "lock_is_a_folder":
        (workdir / ".lock").unlink()
        (workdir / ".lock").mkdir()
    elif damage == "name_too_long":
        workdir = tmp_path / ("x" * 300)
    elif damage == "not_writable":  # As a read-only mount would (the tests run as root).

        def refuse(self, *args, **kwargs):
            raise PermissionError(errno.EROFS, "Read-only file system", str(self))

        monkeypatch.setattr(type(files.as_path(tmp_path)), "write_text", refuse)
    elif damage == "data_dir_empty":
        (tmp_path / "empty").mkdir()
        config.data_dir = str(tmp_path / "empty")
    elif damage == "data_file_truncated":
        broken = tmp_path / "broken"
        shutil.copytree(synthetic_dir, broken)
        labels = broken / "train-labels-idx1-ubyte"
        labels.write_bytes(labels.read_bytes()[:1000])
        config.data_dir = str(broken)
    on_the_copy = damage in ("lock_is_a_folder", "not_writable") or damage.startswith("data")
    copied = tree_listing(tmp_path / "run" / "checkpoints") if on_the_copy else None
    _assert_refused_in_one_line(lambda: train.train_and_evaluate(config, workdir), fragment)
    monkeypatch.undo()
    if copied is not None:  # Its checkpoints as they were.
        assert tree_listing(tmp_path / "run" / "checkpoints") == copied


@pytest.mark.parametrize(
    "code, fix",
    [
        (errno.ENOSPC, "the device holding it is full"),
        # A damaged checkpoint that is a mount point, set aside: 3 tracebacks (trial 12).
        (errno.EBUSY, "busy (a mount point, or in use); unmount or free it"),
        (errno.EDQUOT, "the disk quota is used up"),
        (errno.EACCES, "fix its permissions"),
        (errno.EROFS, "read-only"),
        (errno.ENOTDIR, "a file stands where a folder is needed"),
        (errno.EISDIR, "a folder stands where a file is needed"),
        (errno.ENAMETOOLONG, "too long"),
    ],
)
def test_a_file_system_error_a_user_can_fix_is_one_line_naming_the_path(code, fix):
    line = os_error_line(OSError(code, "what the system says", "/some/path"))
    assert line.startswith("/some/path: what the system says: ") and fix in line
    assert os_error_line(OSError(errno.EIO, "I/O error", "/disk")) is None  # Not the user's.


def test_an_error_without_an_errno_is_classified_by_its_class_and_names_the_path():
    # etils raises IsADirectoryError with a message only; the operation knows the path.
    line = os_error_line(IsADirectoryError("is a directory"), path="/w/curves.png")
    assert line.startswith("/w/curves.png: Is a directory: a folder stands where a file is")
    assert os_error_line(OSError("neither an errno nor a class of its own")) is None


@pytest.mark.parametrize(
    "words",
    [
        # Process 0's error when process 1 failed its restore (2 processes, 2026-12-06).
        "UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc:547] "
        "Connection closed by peer [127.0.0.1]:52962",
        # An Orbax barrier's, after process 1 was killed mid-run.
        "INTERNAL: Barrier failed because: task is set to ERROR: UNAVAILABLE: Task 1 "
        "heartbeat timeout. This indicates that the remote task has failed",
    ],
)
def test_another_process_of_the_run_ending_is_one_line_on_this_one(capsys, words):
    with pytest.raises(SystemExit) as ended, errors.one_line_errors():
        raise jax.errors.JaxRuntimeError(words)
    (line,) = capsys.readouterr().err.splitlines()
    assert ended.value.code == 1 and line.startswith("error: another process of this run ended")
    assert "rerun the same command on every host" in line
    # The same words from anything but JAX's runtime say nothing of a peer: a bug's traceback.
    with pytest.raises(RuntimeError), errors.one_line_errors():
        raise RuntimeError(words)


def test_an_error_names_the_flag_that_moves_its_path(tmp_path):
    errors.name_path(tmp_path / "work", "--workdir")
    errors.name_path(tmp_path / "work" / "export", "--export_dir")
    denied = errno.EACCES, "Permission denied"
    line = os_error_line(OSError(*denied, str(tmp_path / "work" / "export" / "model.json")))
    assert line.endswith("fix its permissions or use another --export_dir"), line
    line = os_error_line(OSError(*denied, str(tmp_path / "work" / "metrics.jsonl")))
    assert line.endswith("fix its permissions or use another --workdir"), line
    line = os_error_line(OSError(*denied, str(tmp_path / "elsewhere")))
    assert line.endswith("fix its permissions or use another path"), line


def _damage_the_workdir(workdir, damage, monkeypatch):
    """Changes a copy of the good workdir (or the process around it) as `damage` says."""
    if damage == "x64":  # A rerun under JAX_ENABLE_X64=1: the step counter is built int64.
        return jax.enable_x64(True)
    log = workdir / "metrics.jsonl"
    lines = log.read_text().splitlines()
    if damage == "metrics_line_not_json":
        log.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2] + "\n")
    elif damage == "metrics_line_a_list":
        log.write_text("[1, 2]\n" + "\n".join(lines[1:]) + "\n")
    elif damage == "metrics_line_without_epoch":
        log.write_text(lines[0].replace('"epoch"', '"epoch_"') + "\n" + lines[1] + "\n")
    elif damage == "metrics_line_without_its_losses":  # Was a KeyError after an epoch more.
        log.write_text('{"epoch": 1}\n' + lines[1] + "\n")
    elif damage == "checkpoint_folder_renamed":
        (workdir / "checkpoints" / "2").rename(workdir / "checkpoints" / "7")
    elif damage == "checkpoint_without_its_meta":
        shutil.rmtree(workdir / "checkpoints" / "2" / "meta")
    elif damage == "empty_checkpoint_folder":  # Made by hand, say; Orbax takes it for one.
        (workdir / "checkpoints" / "9").mkdir()
    elif damage == "disk_full":
        real = os.statvfs(workdir)
        fields = {name: getattr(real, name) for name in dir(real) if name.startswith("f_")}
        full = types.SimpleNamespace(**{**fields, "f_bavail": 10_000 // real.f_frsize})
        monkeypatch.setattr(os, "statvfs", lambda _: full)
    elif damage == "file_size_limit":  # `ulimit -f 20`: Orbax's threads failed one by one.
        real = resource.getrlimit

        def limited(which):
            return (20_000, real(which)[1]) if which == resource.RLIMIT_FSIZE else real(which)

        monkeypatch.setattr(resource, "getrlimit", limited)
    elif damage == "no_inodes_left":  # Room in bytes, none for the checkpoint's files.
        real = os.statvfs(workdir)
        fields = {name: getattr(real, name) for name in dir(real) if name.startswith("f_")}
        full = types.SimpleNamespace(**{**fields, "f_files": 10**6, "f_favail": 10})
        monkeypatch.setattr(os, "statvfs", lambda _: full)
    return contextlib.nullcontext()


@pytest.mark.parametrize(
    "damage, fragment",
    [
        ("x64", "saved with step as int32, this process builds int64 (JAX_ENABLE_X64"),
        ("metrics_line_not_json", "metrics.jsonl line 2: not valid JSON"),
        ("metrics_line_a_list", "metrics.jsonl line 1: not an epoch's record (the record is"),
        ("metrics_line_without_epoch", "line 1: not an epoch's record (the record lacks 'epoch'"),
        ("metrics_line_without_its_losses", "line 1: not an epoch's record (the record lacks"),
        ("checkpoint_folder_renamed", "checkpoints/7: holds the state after epoch 2, not 7"),
        ("checkpoint_without_its_meta", "checkpoints/2: not a whole checkpoint (no meta folder"),
        ("empty_checkpoint_folder", "checkpoints/9: not a whole checkpoint (no state or meta"),
        # Refused before the run trains: it trained an epoch, then refused to save it.
        ("disk_full", "MB free, and a checkpoint needs about"),
        ("no_inodes_left", "can hold 10 more files, and a checkpoint needs about"),
        ("file_size_limit", "may write files of 0.02 MB at most (`ulimit -f`), and each checkpo"),
    ],
)
def test_a_workdir_this_process_cannot_continue_is_one_line_and_keeps_every_checkpoint(
    trained, synthetic_dir, tmp_path, monkeypatch, damage, fragment
):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    config = tiny_config(synthetic_dir, num_epochs=TRAINED_EPOCHS + 1)
    with _damage_the_workdir(workdir, damage, monkeypatch):
        before = tree_listing(workdir / "checkpoints")
        _assert_refused_in_one_line(lambda: train.train_and_evaluate(config, workdir), fragment)
    monkeypatch.undo()
    assert tree_listing(workdir / "checkpoints") == before
    assert not (workdir / "checkpoints_unreadable").exists()


def test_a_rerun_of_another_experiment_names_the_model(trained, synthetic_dir):
    # Another model's fields differ too: the line named the first of them in order
    # ("trained with dropout=0.0, not None"), which hid that the model itself was another.
    config = load_experiment(ROOT / "experiments" / "mlp_scratch.py")
    config.data_dir, config.num_epochs = str(synthetic_dir), TRAINED_EPOCHS + 1
    before = tree_listing(trained / "checkpoints")
    _assert_refused_in_one_line(
        lambda: train.train_and_evaluate(config, trained),
        "this workdir was trained with model='experiments/mlp_c",
    )
    assert tree_listing(trained / "checkpoints") == before


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"num_hiddens": 64}, "trained with num_hiddens=32, not 64"),
        ({"num_epochs": 1}, "holds epoch 2, more than config.num_epochs=1"),
        ({"num_epochs": 3, "folder": "9"}, "checkpoints/9: not a whole checkpoint"),
    ],
    ids=["another_shape", "fewer_epochs", "a_folder_made_by_hand"],
)
def test_a_refused_rerun_keeping_fewer_checkpoints_deletes_none(
    trained, synthetic_dir, tmp_path, change, fragment
):
    # With keep_checkpoints=1 each deleted every checkpoint but the newest (the made one
    # counted as the newest: all of them), then said "nothing was moved".
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    if folder := change.pop("folder", None):
        (workdir / "checkpoints" / folder).mkdir()
    config = tiny_config(synthetic_dir, keep_checkpoints=1, **change)
    before = tree_listing(workdir / "checkpoints")
    _assert_refused_in_one_line(lambda: train.train_and_evaluate(config, workdir), fragment)
    assert tree_listing(workdir / "checkpoints") == before
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == sorted(
        ["1", "2", *([folder] if folder else [])]
    )


def test_a_save_checkpoints_cannot_take_is_one_line_before_orbax_writes_any_of_it(
    trained, tmp_path, monkeypatch
):
    state = checkpointing.restore_workdir(trained).state
    meta = {"val_acc": 0.5, "steps_per_epoch": 1}
    store = checkpointing.CheckpointStore(tmp_path / "run", keep=3)
    folder = tmp_path / "run" / "checkpoints"
    shutil.rmtree(folder)  # Removed since the run started: made again.
    store.save(state, meta)
    store.manager.wait_until_finished()
    shutil.move(folder, tmp_path / "elsewhere")
    folder.write_text("not a folder")  # Replaced by a file since.
    _assert_refused_in_one_line(
        lambda: store.save(state, meta),
        f"{folder}: is a file, not a folder; it was not saved (none is); mend that",
    )
    folder.unlink()
    shutil.move(tmp_path / "elsewhere", folder)
    # Refused for space: the last checkpoint saved is named.
    real = os.statvfs(folder)
    fields = {name: getattr(real, name) for name in dir(real) if name.startswith("f_")}
    full = types.SimpleNamespace(**{**fields, "f_bavail": 0})
    monkeypatch.setattr(os, "statvfs", lambda _: full)
    _assert_refused_in_one_line(
        lambda: store.save(state, meta),
        f"MB free, and the checkpoint of epoch {int(state.epoch)} needs about",
    )
    _assert_refused_in_one_line(
        lambda: store.save(state, meta), f"(the last saved is epoch {int(state.epoch)})"
    )
    monkeypatch.undo()
    # A file size limit lowered while the run goes on (`prlimit --fsize` on its pid).
    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda which: (20_000, real(which)[1]))
    _assert_refused_in_one_line(
        lambda: store.save(state, meta),
        f"at most (`ulimit -f`), and the checkpoint of epoch {int(state.epoch)} writes up to",
    )
    monkeypatch.undo()
    store.close()


def test_an_old_checkpoint_that_cannot_be_deleted_is_one_warning_and_the_run_goes_on(
    trained, tmp_path, monkeypatch, caplog
):
    """Rotation (keep=1) meets a checkpoint with a file nobody may delete (as with a
    read-only part, or `chattr +i`): one warning naming that file, the checkpoint out of
    Orbax's sight, every save done, no traceback; each start tries it again."""
    state = checkpointing.restore_workdir(trained).state
    meta = {"val_acc": 0.5, "steps_per_epoch": 1}
    workdir, folder = tmp_path / "run", tmp_path / "run" / "checkpoints"

    def save(store, epoch):
        store.save(state.replace(epoch=jax.numpy.asarray(epoch, state.epoch.dtype)), meta)

    unlink = os.unlink

    def refuse_in_checkpoint_1(path, *args, **kwargs):
        if os.path.basename(os.path.dirname(os.path.dirname(path))).startswith("1."):
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse_in_checkpoint_1)
    store = checkpointing.CheckpointStore(workdir, keep=1)
    with caplog.at_level("WARNING"):
        for epoch in (1, 2, 3):  # Rotation, before 3 is saved, cannot delete 1.
            save(store, epoch)
        store.close()  # It deletes 2.
        assert store.saved_epochs() == [3]
        checkpointing.CheckpointStore(workdir, keep=1)  # The next start tries 1 again.
    messages = [r.getMessage() for r in caplog.records]
    warnings = [m for m in messages if "could not be deleted" in m]
    assert len(warnings) == 2 and all("\n" not in w for w in warnings), warnings
    leftover = next(folder.glob("1.orbax-checkpoint-tmp-rotated-*"))
    assert f"({leftover}/" in warnings[0] and ": Operation not permitted); delete it" in warnings[0]
    assert warnings[0].startswith(f"{leftover} (checkpoint 1, older than the newest 1, which")
    assert warnings[1].startswith(f"{leftover} (the leftover of an unfinished or rotated-out")
    assert not [m for m in messages if "_CHECKPOINT_METADATA" in m]  # Orbax saw none of it.
    monkeypatch.undo()
    checkpointing.CheckpointStore(workdir, keep=1)
    assert os.listdir(folder) == ["3"]


def test_eval_of_a_workdir_whose_checkpoints_is_a_file_names_it(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    shutil.move(workdir / "checkpoints", tmp_path / "elsewhere")
    (workdir / "checkpoints").write_text("not a folder")
    _assert_refused_in_one_line(
        lambda: checkpointing.restore_workdir(workdir),
        "checkpoints is a file where a folder is needed",
    )


def test_eval_of_a_workdir_whose_data_moved_names_the_flag_that_moves_it(
    trained, synthetic_dir, tmp_path
):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    saved = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**saved, "data_dir": str(tmp_path / "gone")}))
    before = tree_listing(workdir)
    _assert_refused_in_one_line(
        lambda: train.evaluate_workdir(workdir), "if the files moved, pass --data_dir=FOLDER"
    )
    _assert_refused_in_one_line(
        lambda: train.evaluate_workdir(workdir, str(tmp_path)), f"--data_dir={tmp_path} lacks"
    )
    assert train.evaluate_workdir(workdir, str(synthetic_dir))["epoch"] == TRAINED_EPOCHS
    assert tree_listing(workdir) == before


def test_an_export_of_a_workdir_moved_meanwhile_writes_nothing_at_its_old_name(
    trained, tmp_path, monkeypatch
):
    # Its export/ was made again at the old name, "exported to ..." and status 0.
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    restore = checkpointing.restore_workdir

    def restore_then_move(path):
        restored = restore(path)
        workdir.rename(tmp_path / "moved")
        return restored

    monkeypatch.setattr(checkpointing, "restore_workdir", restore_then_move)
    _assert_refused_in_one_line(
        lambda: export.export_workdir(workdir), "run: moved or removed while it was exported"
    )
    assert not workdir.exists()


def test_a_bytes_path_is_refused_in_words_by_every_read_path(trained):
    # export's was "a bytes-like object is required, not 'str'" (trial 11).
    named = os.fsencode(trained)
    for read in (export.export_workdir, train.evaluate_workdir, checkpointing.restore_workdir):
        with pytest.raises(TypeError, match="a path is a str or a pathlib.Path, not bytes"):
            read(named)
    with pytest.raises(TypeError, match="a path is a str or a pathlib.Path, not bytes"):
        predict.classify(named, ["x.png"])


def test_an_eval_of_a_workdir_moved_meanwhile_says_so(trained, tmp_path, monkeypatch):
    # "checkpoints: no checkpoint; train first", a fix for another fault.
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    restore = checkpointing.CheckpointStore.restore_latest

    def move_then_restore(store, abstract_state):
        workdir.rename(tmp_path / "moved")
        return restore(store, abstract_state)

    monkeypatch.setattr(checkpointing.CheckpointStore, "restore_latest", move_then_restore)
    _assert_refused_in_one_line(
        lambda: checkpointing.restore_workdir(workdir), "run: moved or removed while it was read"
    )


def test_a_callers_transfer_guard_is_for_its_own_transfers(synthetic_dir, trained, tmp_path):
    # Under jax.transfer_guard("disallow"), the model's check blamed the model ("fails on a
    # batch of images (... Disallowed host-to-device transfer ...)"), and a population, a
    # state's seed and predict's pixels were implicit transfers (trial 11). Explicit now.
    from helpers import small_dataset  # noqa: PLC0415

    from mlp_jax import loop, sweep  # noqa: PLC0415

    image = tmp_path / "x.npy"
    np.save(image, np.zeros((1, 28, 28), np.uint8))
    with jax.transfer_guard("disallow"):
        assert len(loop.fit(tiny_config(synthetic_dir), small_dataset()).history) == 1
        assert len(sweep.train_population([tiny_config(synthetic_dir)], small_dataset())) == 1
        assert predict.classify(trained, [image])[0][0].startswith(f"{image}[0]: ")
        export.export_workdir(trained, tmp_path / "export")


def test_jax_settings_a_run_cannot_train_under_are_one_line_before_the_model_check(
    synthetic_dir, monkeypatch
):
    # jax.disable_jit(): "ValueError: Disable jit is not supported in the AOT path" (trial 11).
    from helpers import small_dataset  # noqa: PLC0415

    from mlp_jax import loop, sweep  # noqa: PLC0415

    config = tiny_config(synthetic_dir)
    for call in (
        lambda: loop.fit(config, small_dataset()),
        lambda: sweep.train_population([config], small_dataset()),
        lambda: train.train_and_evaluate(config, synthetic_dir / "never"),
    ):
        with jax.disable_jit(), pytest.raises(UserError, match=r"^jax.disable_jit\(\) is on: "):
            call()
    assert not (synthetic_dir / "never").exists()
    # JAX_PLATFORMS naming a platform without its plugin: JAX asserts at its devices' start;
    # a Python caller's fit blamed the model, its restore failed in Orbax.
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.setattr(jax, "devices", lambda *_: (_ for _ in ()).throw(AssertionError()))
    for call in (
        lambda: loop.fit(config, small_dataset()),
        lambda: checkpointing.restore_workdir("."),
    ):
        with pytest.raises(UserError, match="JAX_PLATFORMS='cuda' names no platform"):
            call()
