"""The parallel modes' decisions: the batch split, "auto", and multi-process launches.
(Training on several devices and processes: tests/integration/multidevice_test.py.)"""

import pytest

from mlp_jax import parallel
from mlp_jax.errors import UserError


def test_batch_that_does_not_split_names_the_working_counts():
    with pytest.raises(UserError, match=r"batch_size=256 does not split over 3 devices.*\[1, 2\]"):
        parallel.check_batch_divides(256, 3)


def test_auto_mode():
    assert parallel.resolve_mode("auto", 1) == "none"
    assert parallel.resolve_mode("auto", 8) == "shard_map"
    assert parallel.resolve_mode("pmap", 8) == "pmap"


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


@pytest.mark.parametrize(
    "env, problem",
    [
        ({"SLURM_NTASKS": "abc"}, "SLURM_NTASKS='abc' is not a whole number >= 0"),
        ({"OMPI_COMM_WORLD_SIZE": "2x"}, "OMPI_COMM_WORLD_SIZE='2x' is not a whole number"),
        ({"SLURM_NTASKS": "²"}, "SLURM_NTASKS='²' is not a whole number"),  # A digit to isdigit.
        # "true" ran one process of what the user meant as several, without a word.
        ({"MLP_JAX_DISTRIBUTED": "true"}, "MLP_JAX_DISTRIBUTED='true' is neither 1 .* nor 0"),
    ],
)
def test_a_launch_setting_that_is_no_answer_is_one_line(env, problem):
    with pytest.raises(UserError, match=problem):
        parallel.is_multiprocess_launch(env)
