"""Checkpoints through whole processes: kills at any moment, stop signals, one run per
workdir, a rerun with another shape, and evaluation that writes nothing.

The interrupted runs use the tuned recipe's features on full-size synthetic data, so that an
epoch lasts long enough to be interrupted.
"""

import json
import shutil
import signal
import time

import pytest
from helpers import (
    TINY,
    TRAINED_EPOCHS,
    TUNED_FEATURES,
    assert_one_line_error,
    config_overrides,
    largest_file,
    params_fingerprint,
    resumable_config,
    run_cli,
    start_cli,
    train_uninterrupted,
    tree_listing,
)

from mlp_jax import train
from mlp_jax.errors import signal_name


@pytest.fixture(scope="module")
def uninterrupted(synthetic_full_dir, tmp_path_factory):
    return train_uninterrupted(synthetic_full_dir, tmp_path_factory.mktemp("uninterrupted"))


def test_shape_change_on_rerun_is_refused_and_moves_nothing(
    trained_workdir, synthetic_full_dir, tmp_path
):
    shutil.copytree(trained_workdir[0], tmp_path / "run")
    before = tree_listing(tmp_path / "run" / "checkpoints")
    rerun = run_cli(
        "--config=experiments/mlp_concise.py",
        f"--config.data_dir={synthetic_full_dir}",
        "--config.num_hiddens=64",
        "--config.num_epochs=2",
        f"--workdir={tmp_path / 'run'}",
    )
    assert rerun.returncode != 0 and "Traceback" not in rerun.stderr
    (line,) = rerun.stderr.strip().splitlines()
    assert "num_hiddens=32, not 64" in line and "new --workdir" in line
    assert tree_listing(tmp_path / "run" / "checkpoints") == before
    assert not (tmp_path / "run" / "checkpoints_unreadable").exists()


def test_eval_is_read_only(trained_workdir, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_workdir[0], workdir)
    unfinished = workdir / "checkpoints" / "3.orbax-checkpoint-tmp-1795888000"
    unfinished.mkdir()
    (unfinished / "partial").write_bytes(b"a save in flight")
    newest = largest_file(workdir / "checkpoints" / "2" / "state")
    newest.write_bytes(newest.read_bytes()[:100])
    before = tree_listing(workdir)
    evaluated = run_cli("--mode=eval", f"--workdir={workdir}")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.splitlines()[-1])["epoch"] == 1
    assert tree_listing(workdir) == before  # Nothing written, deleted or moved.


def _start_training(workdir, data_dir, epochs=None, wrapper=()):
    config = resumable_config(data_dir)
    return start_cli(
        *TINY,
        *config_overrides(
            data_dir=data_dir, num_epochs=epochs or config.num_epochs, **TUNED_FEATURES
        ),
        f"--workdir={workdir}",
        wrapper=wrapper,
    )


def _wait_for_epochs(workdir, count, process, timeout=240):
    log = workdir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no {count} epochs within {timeout} s")


def test_sigkill_mid_run_then_rerun_reaches_the_same_parameters(
    synthetic_full_dir, tmp_path, uninterrupted
):
    _, reference = uninterrupted
    process = _start_training(tmp_path, synthetic_full_dir)
    _wait_for_epochs(tmp_path, 1, process)
    while not (tmp_path / "checkpoints" / "1").exists():  # Orbax renames it when complete.
        assert process.poll() is None
        time.sleep(0.01)
    process.kill()  # SIGKILL: no handler runs, a save may be in flight, the lock is left.
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill"
    rerun = _start_training(tmp_path, synthetic_full_dir)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    evaluated = run_cli("--mode=eval", f"--workdir={tmp_path}")
    assert json.loads(evaluated.stdout.splitlines()[-1])[
        "params_fingerprint"
    ] == params_fingerprint(reference)


# Every signal whose default ends a process (mlp_jax.signals.TERMINATING): a preemption
# notice, Ctrl-C, a dropped ssh session or closed terminal, Ctrl-\\, a batch system's; a
# power failure's and a real-time one (each killed the run, its epoch lost).
@pytest.mark.parametrize(
    "signal_number",
    [
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGXCPU,
        signal.SIGPWR,
        signal.SIGRTMIN + 3,
    ],
    ids=signal_name,
)
def test_stop_signal_saves_a_resumable_checkpoint(
    synthetic_full_dir, tmp_path, uninterrupted, signal_number
):
    _, reference = uninterrupted
    process = _start_training(tmp_path, synthetic_full_dir)
    _wait_for_epochs(tmp_path, 1, process)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.fail("the run finished before the signal arrived; make its epochs longer")
    assert process.returncode == 128 + signal_number
    lines = [line for line in stderr.splitlines() if line.strip()]
    name = signal_name(signal_number)
    assert len(lines) == 1 and f"stopped by {name} after epoch" in lines[0], stderr
    assert "rerun the same command to resume" in lines[0]
    stopped_at = int(lines[0].split("after epoch ")[1].split("/")[0])
    assert (tmp_path / "checkpoints" / str(stopped_at)).is_dir()
    resumed = train.train_and_evaluate(resumable_config(synthetic_full_dir), tmp_path)
    assert params_fingerprint(resumed) == params_fingerprint(reference)


def test_a_run_started_ignoring_sighup_goes_on_through_it(synthetic_full_dir, tmp_path):
    # `nohup make train` on a TPU VM: the dropped session's SIGHUP must not stop the run.
    process = _start_training(tmp_path, synthetic_full_dir, wrapper=("nohup",))
    _wait_for_epochs(tmp_path, 1, process)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    records = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(records) == resumable_config(synthetic_full_dir).num_epochs


def test_second_run_on_a_busy_workdir_is_refused_and_the_first_goes_on(
    synthetic_full_dir, tmp_path
):
    first = _start_training(tmp_path, synthetic_full_dir, epochs=1000)  # Stopped below.
    try:
        _wait_for_epochs(tmp_path, 1, first)
        started = time.monotonic()
        second = _start_training(tmp_path, synthetic_full_dir, epochs=1000)
        _, stderr = second.communicate(timeout=120)
        assert time.monotonic() - started < 60
        assert second.returncode == 2, stderr
        (line,) = stderr.strip().splitlines()
        assert f"is in use by process {first.pid}" in line and "another --workdir" in line
        # The first goes on undisturbed, epoch after epoch, until a user stops it: saved.
        refused_at = len((tmp_path / "metrics.jsonl").read_text().splitlines())
        _wait_for_epochs(tmp_path, refused_at + 1, first)
        first.send_signal(signal.SIGTERM)
        _, first_stderr = first.communicate(timeout=300)
        assert first.returncode == 128 + signal.SIGTERM, first_stderr
        (stopped,) = first_stderr.strip().splitlines()
        last = int(stopped.split("stopped by SIGTERM after epoch ")[1].split("/")[0])
    finally:
        first.kill()  # A no-op once it has ended; else the test failed midway.
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, last + 1)) and last > refused_at
    assert str(last) in {p.name for p in (tmp_path / "checkpoints").iterdir()}


# A rerun in an environment that cannot continue the run: refused in one line naming it,
# nothing moved; then the ordinary command resumes.
@pytest.mark.parametrize(
    "name, env, fragments",
    [
        (  # TensorStore takes UTF-8 names only: under LANG=C this name cannot be passed.
            "uni ü",
            {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0"},
            ["not valid in this process's locale", "PYTHONUTF8=1"],
        ),
        (
            "run",
            {"JAX_ENABLE_X64": "1"},
            ["this process builds int64 (JAX_ENABLE_X64", "nothing was moved"],
        ),
    ],
    ids=["lang_c", "x64"],
)
def test_a_rerun_another_environment_cannot_continue_is_refused_then_the_ordinary_one_resumes(
    trained_workdir, synthetic_full_dir, tmp_path, name, env, fragments
):
    workdir = tmp_path / name
    shutil.copytree(trained_workdir[0], workdir)
    before = tree_listing(workdir / "checkpoints")
    more = [*TINY, f"--config.data_dir={synthetic_full_dir}", f"--workdir={workdir}"]
    more.append(f"--config.num_epochs={TRAINED_EPOCHS + 1}")
    refused = run_cli(*more, env=env)
    assert_one_line_error(refused, *fragments)
    assert tree_listing(workdir / "checkpoints") == before
    assert not (workdir / "checkpoints_unreadable").exists()
    resumed = run_cli(*more)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from the checkpoint of epoch {TRAINED_EPOCHS}" in resumed.stdout
