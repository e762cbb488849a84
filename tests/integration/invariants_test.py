"""The fault trial by invariant (docs/faults.md), through whole processes.

Each row is a fault nobody wrote a case for, designed afresh from the invariants, run as a
user runs the command, against a copy of a workdir holding a good run. Every row asserts the
same things: the exit status, one `error: ...` line on stderr (or none where the command
holds and succeeds), no traceback, an end within ROW_SECONDS, and the copy's checkpoints
byte for byte as they were, none set aside. The mechanism each invariant relies on is named
beside it; each row was seen failing with that mechanism taken out (docs/faults.md).
"""

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, TINY, TRAINED_EPOCHS, tree_listing, without_tensorflow_env

# A row's process must end within this many seconds (a hang fails the row, it does not
# stall the suite).
ROW_SECONDS = 90


@dataclasses.dataclass
class Row:
    """One fault.

    Attributes:
      args: the command's arguments, WORKDIR, DATA and TMP standing for the copy of the
        trained workdir, the data's folder and a scratch folder.
      fragments: what the one stderr line holds (no line at all when empty and exit 0).
      exit_code: the status the command must end with.
      arrange: changes the copy (and the scratch folder) before the command runs; returns
        extra environment variables.
      stdout: where the command's stdout goes: "pipe", "/dev/full", "gone" (a pipe whose
        reader has left), or "closed" (no stdout at all, as `>&-` starts it).
      module: the command.
      untouched: globs under TMP that must match nothing afterwards (what the command would
        have written had it started its work).
    """

    args: list[str]
    fragments: list[str]
    exit_code: int = 2
    arrange: Callable[[Path, Path], dict | None] = lambda workdir, tmp: None
    stdout: str = "pipe"
    module: str = "mlp_jax.main"
    untouched: tuple[str, ...] = ()


def _train_more(*extra: str) -> list[str]:
    """The trained run's command, one more epoch."""
    return [
        *TINY,
        "--config.data_dir=DATA",
        f"--config.num_epochs={TRAINED_EPOCHS + 1}",
        "--workdir=WORKDIR",
        *extra,
    ]


def _fifo(relative: str, replace: bool = True):
    """Arranges a named pipe at WORKDIR/relative (a reader opening it waits for ever)."""

    def arrange(workdir, tmp):
        path = workdir / relative
        if replace and path.exists():
            path.unlink()
        os.mkfifo(path)

    return arrange


def _link(relative: str, target: str):
    """Arranges, in place of WORKDIR/relative, a link to `target`."""

    def arrange(workdir, tmp):
        path = workdir / relative
        path.unlink()
        path.symlink_to(target)

    return arrange


def _folder(relative: str):
    def arrange(workdir, tmp):
        path = workdir / relative
        if path.exists():
            path.unlink()
        path.mkdir(parents=True)

    return arrange


def _as_nobody(arrange=None):
    """Runs the command as an unprivileged user (the suite runs as root, whom permissions do
    not stop): `arrange` changes the copy, which is then handed to that user (its modes
    kept)."""

    def wrapped(workdir, tmp):
        if arrange is not None:
            arrange(workdir, tmp)
        subprocess.run(["chown", "-R", "65534:65534", str(workdir.parent)], check=True)
        return {"AS_NOBODY": "1", "MLP_JAX_COMPILATION_CACHE": "", "MLP_JAX_DATA_CACHE": ""}

    return wrapped


def _chmod(relative: str, mode: int):
    def arrange(workdir, tmp):
        (workdir / relative).chmod(mode)

    return arrange


def _emptied(relative: str):
    """Arranges WORKDIR/relative emptied of everything it holds."""

    def arrange(workdir, tmp):
        shutil.rmtree(workdir / relative)
        (workdir / relative).mkdir()

    return arrange


def _write(relative: str, text: str):
    def arrange(workdir, tmp):
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return arrange


def _study_file(defaults: dict, fields: dict, train_epochs: bool) -> str:
    """A study's file over the tiny model: its `defaults` with `fields` (Python source) set."""
    lines = {**defaults, **fields}
    body = "\n".join(f"    config.{k} = {v}" for k, v in lines.items())
    epochs = "    config.train.num_epochs = 1\n" if train_epochs else ""
    return (
        "import ml_collections\nfrom mlp_jax.config import load_experiment\n\n\n"
        "def get_config():\n    config = ml_collections.ConfigDict()\n"
        '    config.train = load_experiment("experiments/mlp_concise.py")\n'
        f"    config.train.num_hiddens = 8\n{epochs}    config.train.validation_size = 1000\n"
        f"{body}\n    return config\n"
    )


def _exercise(**fields) -> str:
    """An exercise file: the tiny model on the data, with `fields` (Python source) set."""
    defaults = {
        "name": '"tiny"',
        "question": '"does it hold?"',
        "sweep": '{"num_hiddens": [8, 16], "seed": [0]}',
        "quick_sweep": '{"num_hiddens": [8], "seed": [0]}',
        "quick_num_epochs": "1",
        "x": '"num_hiddens"',
        "plot": '"line"',
    }
    return _study_file(defaults, fields, train_epochs=True)


def _search(**fields) -> str:
    """A search file over the tiny model, with `fields` (Python source) set."""
    defaults = {
        "title": '"tiny"',
        "space": '{"lr": [0.05, 0.1]}',
        "num_candidates": "2",
        "rungs": "[1]",
        "eta": "2",
        "final_epochs": "1",
        "seed": "0",
    }
    return _study_file(defaults, fields, train_epochs=False)


EXERCISE = "experiments.studies.exercises.run"
SEARCH = "experiments.studies.search.run"


def _study(module: str, source: str, *extra: str, then=None) -> dict:
    """A study's row's keyword arguments: its file written to TMP/study.py (and then
    `then(workdir, tmp)`)."""

    def arrange(workdir, tmp):
        _write("study.py", source)(workdir, tmp)
        if then is not None:
            then(workdir, tmp)

    return dict(
        args=["--config=TMP/study.py", "--results_dir=TMP/results", "--workdir=TMP/w", *extra],
        arrange=arrange,
        module=module,
    )


def _tmp_fifo(relative: str):
    def arrange(workdir, tmp):
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(tmp / relative)

    return arrange


# ---- 1. Checkpoints are moved aside only when their own bytes are proven damaged
# (checkpointing.CheckpointStore.restore_latest: `damage_evidence`, `_check_readable`,
# `_check_entries`; files.as_path for the locale, tried with the ordinary resume after it in
# checkpointing_cli_test).
MOVED_ONLY_IF_DAMAGED = {
    # Orbax logged three lines of its own as it listed the folder (a second trial's).
    "the_newest_checkpoint_emptied_in_eval": Row(
        ["--mode=eval", "--workdir=WORKDIR"],
        [f"checkpoints/{TRAINED_EPOCHS}: not a whole checkpoint", "nothing was moved"],
        arrange=_emptied(f"checkpoints/{TRAINED_EPOCHS}"),
    ),
    "a_checkpoint_file_unreadable_by_the_user": Row(
        _train_more(),
        ["cannot be read by this process", "Permission denied", "nothing was moved"],
        arrange=_as_nobody(_chmod(f"checkpoints/{TRAINED_EPOCHS}/state/manifest.ocdbt", 0)),
    ),
    "a_checkpoint_folder_unreadable_by_the_user": Row(
        _train_more(),
        ["Permission denied", "nothing was moved"],
        arrange=_as_nobody(_chmod(f"checkpoints/{TRAINED_EPOCHS}/state", 0)),
    ),
    "the_meta_file_unreadable_by_the_user_in_eval": Row(
        ["--mode=eval", "--workdir=WORKDIR"],
        ["Permission denied", "nothing was moved"],
        arrange=_as_nobody(_chmod(f"checkpoints/{TRAINED_EPOCHS}/meta/metadata", 0)),
    ),
    "a_pipe_inside_the_newest_checkpoint": Row(
        _train_more(),
        ["is a named pipe (FIFO), where a checkpoint holds files", "nothing was moved"],
        arrange=_fifo(f"checkpoints/{TRAINED_EPOCHS}/state/notes"),
    ),
    "a_pipe_for_a_checkpoint_file_in_eval": Row(
        ["--mode=eval", "--workdir=WORKDIR"],
        ["is a named pipe (FIFO)", "nothing was moved"],
        arrange=_fifo(f"checkpoints/{TRAINED_EPOCHS}/meta/metadata"),
    ),
    # Read by Orbax as it lists the checkpoints, before any checkpoint was checked: each held
    # the process for ever, deaf to SIGTERM (the device's read growing by 400 MB/s).
    "a_pipe_for_a_checkpoints_own_metadata_in_eval": Row(
        ["--mode=eval", "--workdir=WORKDIR"],
        ["_CHECKPOINT_METADATA is a named pipe (FIFO), where a checkpoint holds a file"],
        arrange=_fifo(f"checkpoints/{TRAINED_EPOCHS}/_CHECKPOINT_METADATA"),
    ),
    "a_device_for_a_checkpoints_own_metadata": Row(
        _train_more(),
        ["_CHECKPOINT_METADATA is a character device", "nothing was moved"],
        arrange=_link(f"checkpoints/{TRAINED_EPOCHS}/_CHECKPOINT_METADATA", "/dev/urandom"),
    ),
    "too_few_open_files_allowed": Row(
        _train_more(),
        ["may open 16 files at most (`ulimit -n`)"],
        arrange=lambda w, t: {"NOFILE": "16"},
    ),
}

# ---- 2. Every process ends (files.kind and require_kind before any open; the exit path,
# errors.command, ends the process whatever threads are left).
EVERY_PROCESS_ENDS = {
    "checkpoints_read_only_to_the_user": Row(  # As a read-only mount: Orbax's save threads
        _train_more(),  # would fail after the epoch and wait for ever; refused first.
        ["cannot be written", "checkpoints", "Permission denied"],
        arrange=_as_nobody(_chmod("checkpoints", 0o555)),
    ),
    "metrics_jsonl_a_pipe": Row(
        _train_more(),
        ["metrics.jsonl is a named pipe (FIFO)", "--workdir"],
        arrange=_fifo("metrics.jsonl"),
    ),
    "config_json_a_pipe": Row(
        _train_more(), ["config.json is a named pipe (FIFO)"], arrange=_fifo("config.json")
    ),
    "the_lock_a_pipe": Row(_train_more(), [".lock is a named pipe (FIFO)"], arrange=_fifo(".lock")),
    "curves_png_a_pipe": Row(
        _train_more(), ["curves.png is a named pipe (FIFO)"], arrange=_fifo("curves.png")
    ),
    "eval_of_a_config_json_pipe": Row(
        ["--mode=eval", "--workdir=WORKDIR"],
        ["config.json is a named pipe (FIFO)"],
        arrange=_fifo("config.json"),
    ),
    "predict_of_a_pipe": Row(
        ["--mode=predict", "--workdir=WORKDIR", "TMP/image.png"],
        ["image.png: cannot be classified", "named pipe (FIFO)"],
        exit_code=1,
        arrange=lambda w, t: os.mkfifo(t / "image.png"),
    ),
    "an_exercise_file_a_pipe": Row(
        ["--config=TMP/study.py", "--quick"],
        ["--config=TMP/study.py is a named pipe (FIFO), not an experiment file"],
        arrange=lambda w, t: os.mkfifo(t / "study.py"),
        module=EXERCISE,
    ),
    # Every command waited for ever, without a word (trial 10).
    "a_flag_file_a_pipe": Row(
        ["--mode=eval", "--workdir=WORKDIR", "--flagfile", "TMP/flags"],
        ["--flagfile=TMP/flags is a named pipe (FIFO), not a file of flags"],
        arrange=lambda w, t: os.mkfifo(t / "flags"),
    ),
    "an_exercise_result_a_pipe": Row(
        **_study(EXERCISE, _exercise(), "--quick", then=_tmp_fifo("results/tiny.json")),
        fragments=["results/tiny.json is a named pipe (FIFO) where a file is needed"],
        untouched=("w/tiny/*.json",),  # Refused before any population trained.
    ),
    "a_thread_left_waiting_after_the_one_line": Row(
        ["-c", "import stuck_after_error"],
        ["config.lr=0.0 is invalid"],
        module="",
    ),
}

# ---- 3. Where the output is the product, a failed write fails the command (progress.emit).
PRODUCT_WRITES = {
    "eval_to_a_full_device": Row(
        ["--mode=eval", "--workdir=WORKDIR"],
        ["standard output: the result could not be written", "No space left"],
        stdout="/dev/full",
    ),
    "predict_to_a_full_device": Row(
        ["--mode=predict", "--workdir=WORKDIR", "TMP/one.npy"],
        ["standard output: the result could not be written"],
        arrange=lambda w, t: np.save(t / "one.npy", np.zeros((1, 784), np.uint8)),
        stdout="/dev/full",
    ),
    "export_to_a_full_device": Row(
        ["--mode=export", "--workdir=WORKDIR", "--export_dir=TMP/export"],
        ["standard output: the result could not be written"],
        stdout="/dev/full",
    ),
    "eval_to_a_reader_that_left": Row(
        ["--mode=eval", "--workdir=WORKDIR"],
        ["standard output: the result could not be written", "Broken pipe"],
        stdout="gone",
    ),
    "predict_to_a_reader_that_left": Row(
        ["--mode=predict", "--workdir=WORKDIR", "TMP/one.npy"],
        ["standard output: the result could not be written", "Broken pipe"],
        arrange=lambda w, t: np.save(t / "one.npy", np.zeros((1, 784), np.uint8)),
        stdout="gone",
    ),
    "eval_with_stdout_closed_from_the_start": Row(
        ["--mode=eval", "--workdir=WORKDIR"],
        ["standard output: the result could not be written", "closed when the command"],
        stdout="closed",
    ),
    "config_reference_to_a_full_device": Row(  # `make docs`'s generator.
        ["experiments/mlp_scratch.py"],
        ["standard output: the result could not be written", "No space left"],
        stdout="/dev/full",
        module="mlp_jax.config",
    ),
    # A benchmark's table is its product too (the cheapest benchmark: a child's rates).
    "benchmark_to_a_full_device": Row(
        ["--rates=1"],
        ["standard output: the result could not be written", "No space left"],
        stdout="/dev/full",
        module="benchmarks.cpu_bfloat16",
    ),
    "benchmark_with_stdout_closed_from_the_start": Row(
        ["--rates=1"],
        ["standard output: the result could not be written", "closed when the command"],
        stdout="closed",
        module="benchmarks.cpu_bfloat16",
    ),
}

# ---- 5. Every error names the path and the flag that moves it (errors.os_error_line,
# errors.name_path, files).
NAMES_PATH_AND_FLAG = {
    # Read as --config is defined, before the flags are parsed (a traceback until 2026-12-06).
    "a_flagfile_missing": Row(
        ["--flagfile=TMP/missing.flags"], ["missing.flags", "fix the --flagfile path"]
    ),
    "curves_png_a_folder": Row(
        _train_more(),
        ["curves.png is a folder where a file is needed", "--workdir"],
        arrange=_folder("curves.png"),
    ),
    "export_dir_a_file": Row(
        ["--mode=export", "--workdir=WORKDIR", "--export_dir=TMP/file"],
        ["--export_dir=", "is a file, not a folder"],
        arrange=_write("file", ""),
    ),
    "export_model_json_a_folder": Row(
        ["--mode=export", "--workdir=WORKDIR", "--export_dir=TMP/export"],
        ["model.json is a folder where a file is needed", "--export_dir"],
        arrange=lambda w, t: (t / "export" / "model.json").mkdir(parents=True),
    ),
    "export_into_a_folder_unwritable_by_the_user": Row(
        ["--mode=export", "--workdir=WORKDIR"],
        ["Permission denied", "use another --export_dir"],
        arrange=_as_nobody(lambda w, t: ((w / "export").mkdir(), (w / "export").chmod(0o555))),
    ),
    "a_missing_config_file_with_an_override": Row(
        ["--config=nope.py", "--config.lr=0.05", "--workdir=WORKDIR"],
        ["--config=nope.py: no such file"],
    ),
    "a_config_file_whose_name_holds_a_colon": Row(  # "No such file: TMP/a" (trial 8).
        ["--config=TMP/a:b.py", "--workdir=TMP/run"],
        ["--config=TMP/a:b.py: ml_collections reads what follows a ':'", "a path without ':'"],
        arrange=_write("a:b.py", "def get_config():\n    return None\n"),
        untouched=("run",),
    ),
    "a_workdir_of_file_uri": Row(  # etils.epath's KeyError, in every command (trial 8).
        [*TINY, "--config.data_dir=DATA", "--workdir=file://TMP/run"],
        ["file://TMP/run: file:// paths are not read here; give it without file://"],
        untouched=("run",),
    ),
    "a_config_file_that_is_a_folder": Row(
        ["--config=experiments", "--workdir=WORKDIR"], ["--config=experiments", "a folder"]
    ),
    "a_workdir_under_a_file": Row(
        [*TINY, "--config.data_dir=DATA", "--workdir=TMP/file/run"],
        ["TMP/file", "--workdir"],
        arrange=_write("file", ""),
    ),
    "eval_data_dir_a_file": Row(
        ["--mode=eval", "--workdir=WORKDIR", "--data_dir=TMP/file"],
        ["--data_dir=", "lacks the Fashion-MNIST IDX files"],
        arrange=_write("file", ""),
    ),
    "metrics_jsonl_unreadable_by_the_user": Row(
        _train_more(),
        ["metrics.jsonl: Permission denied", "fix its permissions or use another --workdir"],
        arrange=_as_nobody(_chmod("metrics.jsonl", 0)),
    ),
    "an_idx_file_unreadable_by_the_user": Row(
        ["--mode=eval", "--workdir=WORKDIR", "--data_dir=TMP/data"],
        ["train-images-idx3-ubyte: Permission denied", "--data_dir"],
        arrange=_as_nobody(lambda w, t: _copy_data(t, unreadable="train-images-idx3-ubyte")),
    ),
}


# ---- 6. Everything is validated before work starts or anything is written (config.validate,
# train._refuse_fewer_epochs, search.check_choices and check_halving, the exercise's check).
def _launch(**settings: str):
    """Arranges a multi-process launch's environment (a `Row`'s extra variables)."""
    return lambda workdir, tmp: settings


VALIDATED_FIRST = {
    # A multi-process launch's settings, before JAX's runtime starts (each was a traceback).
    **{
        f"a_launch_{name}": Row(_train_more(), fragments, arrange=_launch(**settings))
        for name, settings, fragments in (
            (
                "process_id_not_a_number",
                {"JAX_PROCESS_ID": "abc", "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"},
                ["JAX_PROCESS_ID='abc' is not a whole number"],
            ),
            (
                "process_id_past_the_count",
                {
                    "JAX_PROCESS_ID": "5",
                    "JAX_NUM_PROCESSES": "2",
                    "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1",
                },
                ["JAX_PROCESS_ID=5 is not one of the 2 processes"],
            ),
            (
                "coordinator_without_a_port",
                {"JAX_COORDINATOR_ADDRESS": "localhost"},
                ["JAX_COORDINATOR_ADDRESS='localhost' is not HOST:PORT"],
            ),
            (
                "asked_for_without_a_coordinator",
                {"MLP_JAX_DISTRIBUTED": "1"},
                ["distributed runtime did not start", "MLP_JAX_DISTRIBUTED='1'"],
            ),
        )
    },
    "a_rerun_with_fewer_epochs": Row(
        [*TINY, "--config.data_dir=DATA", "--config.num_epochs=1", "--workdir=WORKDIR"],
        ["holds epoch 2, more than config.num_epochs=1", "--config.num_epochs=3"],
    ),
    "a_trace_epoch_beyond_the_run": Row(
        _train_more("--config.trace_epoch=99"), ["config.trace_epoch=99 is invalid"]
    ),
    "an_exercise_grid_with_an_empty_list": Row(
        **_study(EXERCISE, _exercise(quick_sweep='{"num_hiddens": [], "seed": [0]}'), "--quick"),
        fragments=["sweep key 'num_hiddens' has [] for its values"],
    ),
    "an_exercise_plot_that_does_not_exist": Row(
        **_study(EXERCISE, _exercise(plot='"pie"'), "--quick"), fragments=["plot='pie' is invalid"]
    ),
    "an_exercise_named_outside_its_folders": Row(  # It replaced a README beside them.
        **_study(EXERCISE, _exercise(name='"../README"'), "--quick"),
        fragments=["name='../README' is invalid: the name of its result files"],
    ),
    "an_exercise_x_not_in_its_grid": Row(
        **_study(EXERCISE, _exercise(x='"lr"'), "--quick"), fragments=["x='lr' is invalid"]
    ),
    "a_search_with_eta_0": Row(
        **_study(SEARCH, _search(eta="0"), "--tuned_config=TMP/tuned.py"),
        fragments=["eta=0 is invalid"],
    ),
    "a_search_with_minus_one_candidate": Row(
        **_study(SEARCH, _search(num_candidates="-1"), "--tuned_config=TMP/tuned.py"),
        fragments=["num_candidates=-1 is invalid"],
    ),
    "a_search_with_falling_rungs": Row(
        **_study(SEARCH, _search(rungs="[2, 1]", eta="2"), "--tuned_config=TMP/tuned.py"),
        fragments=["rungs=[2, 1] is invalid"],
    ),
    "a_search_space_with_an_empty_choice": Row(
        **_study(SEARCH, _search(space='{"lr": []}'), "--tuned_config=TMP/tuned.py"),
        fragments=["search space key 'lr' has [] for its values"],
    ),
}

TRIAL = {
    **{f"moved_only_if_damaged-{k}": v for k, v in MOVED_ONLY_IF_DAMAGED.items()},
    **{f"every_process_ends-{k}": v for k, v in EVERY_PROCESS_ENDS.items()},
    **{f"product_writes-{k}": v for k, v in PRODUCT_WRITES.items()},
    **{f"names_path_and_flag-{k}": v for k, v in NAMES_PATH_AND_FLAG.items()},
    **{f"validated_first-{k}": v for k, v in VALIDATED_FIRST.items()},
}


def _copy_data(tmp: Path, unreadable: str) -> None:
    """TMP/data: the synthetic data's files, one of them unreadable to its owner."""
    source = Path(os.environ["TRIAL_DATA"])
    shutil.copytree(source, tmp / "data")
    (tmp / "data" / unreadable).chmod(0)


# A module that leaves a thread waiting for ever, as Orbax's signalling threads do after a
# save that failed, then fails as a user error: the process must still end.
STUCK_AFTER_ERROR = """
import threading

from mlp_jax import errors

errors.EXIT_GRACE_SECONDS = 3.0


def main():
    threading.Thread(target=threading.Event().wait, name="left waiting").start()
    raise errors.UserError("config.lr=0.0 is invalid: must be > 0")


errors.command(main)()
"""


@pytest.fixture(scope="module")
def scratch_modules(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modules")
    (folder / "stuck_after_error.py").write_text(STUCK_AFTER_ERROR)
    return folder


def _substitute(args: list[str], workdir: Path, data: Path, tmp: Path) -> list[str]:
    return [
        a.replace("WORKDIR", str(workdir)).replace("DATA", str(data)).replace("TMP", str(tmp))
        for a in args
    ]


def _open_to_others(path: Path) -> None:
    """Lets an unprivileged user through `path`'s folders (pytest makes them 0700 for root)."""
    for folder in [path, *path.parents]:
        if folder == Path("/"):
            break
        folder.chmod(folder.stat().st_mode | 0o005)


def _command(row: Row, env: dict) -> list[str]:
    """python -m MODULE (or python ARGS), as an unprivileged user, with a limit on open
    files, as the row's environment asks (those requests leave `env`)."""
    prefix = []
    if env.pop("AS_NOBODY", None):
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if "NOFILE" in env:
        prefix = ["prlimit", f"--nofile={env.pop('NOFILE')}", *prefix]
    return [*prefix, sys.executable, *(["-m", row.module] if row.module else [])]


@pytest.mark.parametrize("name", sorted(TRIAL))
def test_a_fault_holds_its_invariant(
    name, trained_workdir, synthetic_full_dir, scratch_modules, tmp_path
):
    row = TRIAL[name]
    home = tmp_path / "case"
    scratch, workdir = home / "tmp", home / "run"
    scratch.mkdir(parents=True)
    shutil.copytree(trained_workdir[0], workdir)
    os.environ["TRIAL_DATA"] = str(synthetic_full_dir)
    env = dict(row.arrange(workdir, scratch) or {})
    if "RENAME" in env:
        workdir = workdir.rename(home / env.pop("RENAME"))
    if "AS_NOBODY" in env:
        for path in (home, synthetic_full_dir, scratch_modules):
            _open_to_others(path)
    checkpoints_before = tree_listing(workdir / "checkpoints")
    env = without_tensorflow_env({"HOME": str(home), **env})
    env["PYTHONPATH"] = os.pathsep.join([str(scratch_modules), env["PYTHONPATH"]])
    command = _command(row, env) + _substitute(row.args, workdir, synthetic_full_dir, scratch)
    if row.stdout == "closed":  # By a shell: a fork of this multithreaded process may hang.
        command = ["sh", "-c", 'exec "$@" >&-', "sh", *command]
    with open("/dev/full", "w") if row.stdout == "/dev/full" else contextlib.nullcontext() as full:
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=full or subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if row.stdout == "gone":
            process.stdout.close()  # The reader leaves before the answer comes.
            process.stdout = None
        try:
            _, stderr = process.communicate(timeout=ROW_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail(f"still running after {ROW_SECONDS} s")
        seconds = time.monotonic() - started
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert process.returncode == row.exit_code, stderr[-3000:]
    if row.fragments:
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
        for fragment in row.fragments:
            assert fragment.replace("TMP", str(scratch)) in lines[0], lines[0]
    else:
        assert not lines, stderr[-3000:]
    assert seconds < ROW_SECONDS
    assert tree_listing(workdir / "checkpoints") == checkpoints_before
    assert not (workdir / "checkpoints_unreadable").exists()
    for pattern in row.untouched:
        assert not list(scratch.glob(pattern)), pattern
