"""Data parallelism on 8 CPU devices (and on 2 processes): the results match one device."""

import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest
from helpers import PARALLEL_LR, QUICK_COMPILE_XLA_FLAGS, ROOT, run_cli, start_cli
from multidevice_runs import EPOCHS  # The config the 2-process runs are compared with.

from mlp_jax import checkpointing

# Thirteen tiny runs, each compiled once: compiled quick (half the time); the two-process
# runs below compile as users do.
MULTIDEVICE_ENV = {
    "XLA_FLAGS": f"{QUICK_COMPILE_XLA_FLAGS} --xla_force_host_platform_device_count=8",
    "JAX_PLATFORMS": "cpu",
}


def _max_relative_difference(a_leaves, b_leaves) -> float:
    return max(
        float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))
        for a, b in zip(a_leaves, b_leaves, strict=True)
    )


def _load(path):
    """The parameters a run saved (multidevice_runs.py), as a list of arrays."""
    with np.load(path) as f:
        names = [k for k in f.files if k.startswith("arr_")]
        return [f[k] for k in sorted(names, key=lambda k: int(k.split("_")[1]))]


def _load_metrics(path):
    """Its per-epoch (train_loss, train_acc, val_loss, val_acc)."""
    with np.load(path) as f:
        return f["metrics"]


@pytest.fixture(scope="module")
def multidevice_runs(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("multidevice")
    result = run_cli(
        str(synthetic_dir),
        str(out),
        module="multidevice_runs",
        env={**MULTIDEVICE_ENV, "PYTHONPATH": str(ROOT / "tests" / "integration")},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return out


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
@pytest.mark.parametrize("num_devices", [2, 4, 8])
def test_data_parallel_matches_one_device(multidevice_runs, mode, num_devices):
    reference = _load(multidevice_runs / "none_1.npz")
    result = _load(multidevice_runs / f"{mode}_{num_devices}.npz")
    assert _max_relative_difference(result, reference) < 1e-5
    # The metrics too: each device's sums must be added up, in training and in evaluation.
    np.testing.assert_allclose(
        _load_metrics(multidevice_runs / f"{mode}_{num_devices}.npz"),
        _load_metrics(multidevice_runs / "none_1.npz"),
        rtol=1e-5,
    )


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_two_epochs_in_one_data_parallel_program_equal_one_program_each(multidevice_runs, mode):
    fused, alone = (multidevice_runs / f"{mode}_4{suffix}.npz" for suffix in ("_fused", ""))
    for a, b in zip(_load(fused), _load(alone), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(_load_metrics(fused), _load_metrics(alone))


@pytest.mark.parametrize("order", ["pmap_then_shard_map", "shard_map_then_pmap"])
def test_checkpoints_restore_across_modes(multidevice_runs, order):
    reference = _load(multidevice_runs / "none_1.npz")
    assert _max_relative_difference(_load(multidevice_runs / f"{order}.npz"), reference) < 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_process_args(data_dir, mode: str) -> list[str]:
    return [
        "--config=experiments/mlp_concise.py",
        "--config.num_hiddens=32",
        f"--config.num_epochs={EPOCHS}",
        f"--config.data_dir={data_dir}",
        f"--config.parallel={mode}",
        f"--config.lr={PARALLEL_LR}",
    ]


def _launch_two_processes(
    args: list[str],
    second: tuple[str, ...] = (),
    count: int = 2,
    first: tuple[str, ...] = (),
    second_devices: int = 2,
) -> list[subprocess.Popen]:
    """`python -m mlp_jax.main ARGS` as 2 processes of 2 CPU devices each (the second
    `second_devices`), training together (the first given `first` after them, the second
    `second`); the first `count` of them are started."""
    port = _free_port()
    return [
        start_cli(
            *args,
            *(second if i == 1 else first),
            env={
                "XLA_FLAGS": "--xla_force_host_platform_device_count="
                f"{second_devices if i == 1 else 2}",
                "JAX_PLATFORMS": "cpu",
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_two_processes_match_one_process_with_four_devices(
    synthetic_dir, tmp_path, multidevice_runs, mode
):
    processes = _launch_two_processes(
        [*_two_process_args(synthetic_dir, mode), f"--workdir={tmp_path}"]
    )
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, stderr) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    # Only process 0 prints and writes the run's files.
    assert f"epoch   {EPOCHS}/" in outputs[0][0] and "epoch" not in outputs[1][0]
    assert f"4 device(s) (cpu, parallel={mode})" in outputs[0][0]
    two = jax.tree.leaves(checkpointing.restore_workdir(tmp_path).state.params)
    # The same config (multidevice_runs.py) trained by one process on 4 of its 8 devices.
    one = _load(multidevice_runs / "shard_map_4.npz")
    assert _max_relative_difference(two, one) < 1e-5


@pytest.mark.parametrize("differs", ["config", "workdir", "devices"])
def test_two_processes_given_different_configs_each_say_so_in_one_line(
    synthetic_dir, tmp_path, differs
):
    # Their programs differ: the first collective aborted both, with no line from either.
    # Given different workdirs, both waited for ever in Orbax's first save; given different
    # device counts, both ended in a traceback in the first collective (trial 9).
    args, workdir = _two_process_args(synthetic_dir, "shard_map"), f"--workdir={tmp_path}"
    first, second, second_devices = (workdir,), (workdir, "--config.num_hiddens=64"), 2
    if differs == "workdir":
        second = (f"--workdir={tmp_path / 'elsewhere'}",)
    elif differs == "devices":
        second, second_devices = first, 6  # (8 in all: the batch splits.)
    said = {
        "devices": "hold different numbers of devices (process 0: 2, process 1: 6); give every",
    }.get(differs, "were given different configs or workdirs")
    processes = _launch_two_processes(
        args, first=first, second=second, second_devices=second_devices
    )
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 2, stderr
            assert stderr.strip().startswith(f"error: the processes of this run {said}"), stderr
            assert len(stderr.strip().splitlines()) == 1, stderr
    finally:
        for process in processes:  # Both waited for ever, deaf to SIGTERM, without the mend.
            process.kill()


def test_a_process_waiting_for_the_others_ends_on_a_stop_signal(synthetic_dir, tmp_path):
    # JAX waits for every process inside one C++ call (five minutes): SIGTERM went unheard.
    (waiting,) = _launch_two_processes(
        [*_two_process_args(synthetic_dir, "shard_map"), f"--workdir={tmp_path}"], count=1
    )
    time.sleep(5)  # Well into the wait for process 1, which never starts.
    waiting.send_signal(signal.SIGTERM)
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.startswith("error: stopped by SIGTERM;") and len(stderr.splitlines()) == 1
