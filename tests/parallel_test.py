"""Data parallelism on 8 CPU devices (and on 2 processes): the results match one device."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT, run_cli

from mlp_jax import checkpointing, parallel
from mlp_jax.errors import UserError

MULTIDEVICE_ENV = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}


def _max_relative_difference(a_leaves, b_leaves) -> float:
    return max(
        float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))
        for a, b in zip(a_leaves, b_leaves, strict=True)
    )


def _load(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def multidevice_runs(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("multidevice")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "multidevice_runs.py"), str(synthetic_dir), str(out)],
        cwd=ROOT,
        env={**os.environ, **MULTIDEVICE_ENV, "PYTHONPATH": str(ROOT / "tests")},
        capture_output=True,
        text=True,
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


@pytest.mark.parametrize("order", ["pmap_then_shard_map", "shard_map_then_pmap"])
def test_checkpoints_restore_across_modes(multidevice_runs, order):
    reference = _load(multidevice_runs / "none_1.npz")
    assert _max_relative_difference(_load(multidevice_runs / f"{order}.npz"), reference) < 1e-5


def test_batch_that_does_not_split_names_the_working_counts():
    with pytest.raises(UserError, match=r"batch_size=256 does not split over 3 devices.*\[1, 2\]"):
        parallel.check_batch_divides(256, 3)


def test_auto_mode():
    assert parallel.resolve_mode("auto", 1) == "none"
    assert parallel.resolve_mode("auto", 8) == "shard_map"
    assert parallel.resolve_mode("pmap", 8) == "pmap"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_four_devices(synthetic_dir, tmp_path):
    common = [
        "--config=experiments/mlp_concise.py",
        "--config.num_hiddens=32",
        "--config.num_epochs=2",
        f"--config.data_dir={synthetic_dir}",
        "--config.parallel=shard_map",
    ]
    single = run_cli(
        *common,
        f"--workdir={tmp_path / 'one'}",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"},
    )
    assert single.returncode == 0, single.stderr
    port = _free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mlp_jax.main", *common, f"--workdir={tmp_path / 'two'}"],
            cwd=ROOT,
            env={
                **os.environ,
                "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                "JAX_PLATFORMS": "cpu",
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, stderr) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    # Only process 0 prints and writes the run's files.
    assert "epoch   2/2" in outputs[0][0] and "epoch" not in outputs[1][0]
    assert "4 device(s)" in outputs[0][0]
    one = checkpointing.restore_workdir(tmp_path / "one").state.params
    two = checkpointing.restore_workdir(tmp_path / "two").state.params
    assert _max_relative_difference(jax.tree.leaves(two), jax.tree.leaves(one)) < 1e-5


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, False),
        ({"MLP_JAX_DISTRIBUTED": "1"}, True),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, False),
        ({"TPU_WORKER_HOSTNAMES": "t1k-w-0,t1k-w-1"}, True),
        ({"SLURM_NTASKS": "1"}, False),
        ({"SLURM_NTASKS": "4"}, True),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
    ],
)
def test_multiprocess_launch_detection(env, expected):
    assert parallel.is_multiprocess_launch(env) is expected
