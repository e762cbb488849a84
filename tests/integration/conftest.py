"""Fixtures of the full tier: one workdir trained through the command line, shared by the
tests that read it (a test that changes it works on a copy)."""

import pytest
from helpers import TINY, TRAINED_EPOCHS, run_cli


@pytest.fixture(scope="session")
def trained_workdir(synthetic_full_dir, tmp_path_factory):
    """(workdir, its command's result): the tiny run trained by `python -m mlp_jax.main` for
    TRAINED_EPOCHS epochs on the full-size synthetic data (enough steps to learn it). Read
    it; copy it to change it."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli(
        *TINY,
        f"--workdir={workdir}",
        f"--config.data_dir={synthetic_full_dir}",
        f"--config.num_epochs={TRAINED_EPOCHS}",
    )
    assert result.returncode == 0, result.stderr
    return workdir, result


@pytest.fixture(scope="session")
def gcs():
    """A GCS API on 127.0.0.1 (benchmarks/gcs_emulator.py) holding the bucket "bucket", for
    the session: yields the environment that points a process's GCS clients at it. Each test
    writes under a prefix of its own."""
    from benchmarks import gcs_emulator  # noqa: PLC0415  (only these tests start one)

    with gcs_emulator.running("bucket") as env:
        yield env
