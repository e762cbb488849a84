"""Checkpoints: exact resumption, kills at any moment, corrupt checkpoints, restore anywhere."""

import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, run_cli, tiny_config, without_tensorflow_env

from mlp_jax import checkpointing, train
from mlp_jax.errors import UserError


def _fingerprint(result) -> str:
    return checkpointing.params_fingerprint(result.state.params)


@pytest.fixture(scope="module")
def uninterrupted(synthetic_dir, tmp_path_factory):
    """A 3-epoch run that nothing interrupts: the reference every resumption must equal."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), workdir)
    return workdir, result


def test_resumed_run_is_bit_identical(synthetic_dir, tmp_path, uninterrupted):
    _, reference = uninterrupted
    first = train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1), tmp_path)
    assert int(first.state.epoch) == 1
    resumed = train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    assert _fingerprint(resumed) == _fingerprint(reference)
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(reference.state), strict=True):
        np.testing.assert_array_equal(a, b)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["val_acc"] == reference.history[-1]["val_acc"]


def test_changed_config_on_resume_is_refused(synthetic_dir, tmp_path):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1), tmp_path)
    with pytest.raises(UserError, match=r"trained with lr=0.1, not 0.2"):
        train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2, lr=0.2), tmp_path)


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


def _largest_file(directory):
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "tamper"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(synthetic_dir, tmp_path, damage):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    newest = _largest_file(tmp_path / "checkpoints" / "3" / "state")
    raw = bytearray(newest.read_bytes())
    if damage == "truncate":
        newest.write_bytes(raw[: len(raw) // 2])
    else:
        raw[len(raw) // 2] ^= 0xFF
        newest.write_bytes(bytes(raw))
    restored = checkpointing.restore_workdir(tmp_path)
    assert int(restored.state.epoch) == 2
    assert list((tmp_path / "checkpoints_unreadable").iterdir())
    # Training again resumes from epoch 2 and writes a sound epoch 3.
    again = train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    assert int(again.state.epoch) == 3


def test_no_readable_checkpoint_is_one_clear_error(synthetic_dir, tmp_path):
    train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=1, keep_checkpoints=1), tmp_path)
    for f in (tmp_path / "checkpoints" / "1" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    with pytest.raises(UserError, match="no readable checkpoint.*start afresh"):
        checkpointing.restore_workdir(tmp_path)


def _start_training(workdir, data_dir, epochs):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlp_jax.main",
            "--config=experiments/mlp_concise.py",
            "--config.num_hiddens=32",
            f"--config.data_dir={data_dir}",
            f"--config.num_epochs={epochs}",
            f"--workdir={workdir}",
        ],
        cwd=ROOT,
        env=without_tensorflow_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
    synthetic_dir, tmp_path, uninterrupted
):
    _, reference = uninterrupted
    process = _start_training(tmp_path, synthetic_dir, epochs=3)
    _wait_for_epochs(tmp_path, 1, process)
    while not (tmp_path / "checkpoints" / "1").exists():  # Orbax renames it when complete.
        assert process.poll() is None
        time.sleep(0.01)
    process.kill()  # SIGKILL: no handler runs, a save may be in flight.
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill"
    rerun = run_cli(
        "--config=experiments/mlp_concise.py",
        "--config.num_hiddens=32",
        f"--config.data_dir={synthetic_dir}",
        "--config.num_epochs=3",
        f"--workdir={tmp_path}",
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed from the checkpoint of epoch" in rerun.stdout
    evaluated = run_cli("--mode=eval", f"--workdir={tmp_path}")
    assert json.loads(evaluated.stdout.splitlines()[-1])["params_fingerprint"] == _fingerprint(
        reference
    )


def test_sigterm_saves_a_resumable_checkpoint(synthetic_dir, tmp_path, uninterrupted):
    _, reference = uninterrupted
    process = _start_training(tmp_path, synthetic_dir, epochs=3)
    _wait_for_epochs(tmp_path, 1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.fail("the run finished before SIGTERM arrived; make its epochs longer")
    assert process.returncode == 128 + signal.SIGTERM
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "stopped by SIGTERM after epoch" in lines[0], stderr
    assert "rerun the same command to resume" in lines[0]
    stopped_at = int(lines[0].split("after epoch ")[1].split("/")[0])
    assert (tmp_path / "checkpoints" / str(stopped_at)).is_dir()
    resumed = train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=3), tmp_path)
    assert _fingerprint(resumed) == _fingerprint(reference)


def test_eval_mode_matches_the_last_val_acc(uninterrupted):
    workdir, reference = uninterrupted
    result = train.evaluate_workdir(workdir)
    assert result["epoch"] == 3
    assert result["test_acc"] == pytest.approx(reference.history[-1]["val_acc"], abs=1e-6)
    assert result["params_fingerprint"] == _fingerprint(reference)


def test_restore_workdir_predicts_class_names(uninterrupted, synthetic_dir):
    from mlp_jax import data, steps

    workdir, _ = uninterrupted
    model, state, config = checkpointing.restore_workdir(workdir)
    assert config.num_hiddens == 32
    _, test = data.load_fashion_mnist(str(synthetic_dir), use_tfds=False)
    predicted = steps.predict(state, model.apply, test.images[:100])
    assert float((np.asarray(predicted) == test.labels[:100]).mean()) > 0.9
    assert {data.CLASS_NAMES[i] for i in np.asarray(predicted)} <= set(data.CLASS_NAMES)
