"""Trains the tiny config in every parallel mode; run by multidevice_test.py in a subprocess
whose XLA_FLAGS give the CPU 8 devices (JAX reads them once, at start-up).

Usage: python -m multidevice_runs DATA_DIR OUT_DIR (tests and tests/integration on PYTHONPATH)
Writes OUT_DIR/<name>.npz with the final parameters and the per-epoch metrics of each run.
"""

import sys
from pathlib import Path

import jax
import numpy as np
from helpers import PARALLEL_LR, tiny_config

from mlp_jax import train

# The per-epoch metrics each run records, compared across modes as the parameters are.
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
# Each run's epochs (multidevice_test's 2-process runs train the same config).
EPOCHS = 2


def _save(path: Path, result) -> None:
    leaves = jax.tree.leaves(jax.device_get(result.state.params))
    history = np.array([[record[key] for key in METRICS] for record in result.history])
    np.savez(path, *[np.asarray(x) for x in leaves], metrics=history)


def run_all(data_dir: Path, out: Path) -> None:
    """Every mode on 1, 2, 4, 8 devices for 2 epochs, both epochs in one program on 4, and
    checkpoints restored across modes."""
    assert jax.device_count() == 8, jax.devices()
    runs = [("none", 1)] + [(m, n) for m in ("pmap", "shard_map") for n in (2, 4, 8)]
    for mode, n in runs:
        config = tiny_config(
            data_dir, num_epochs=EPOCHS, parallel=mode, num_devices=n, lr=PARALLEL_LR
        )
        _save(out / f"{mode}_{n}.npz", train.train_and_evaluate(config, out / f"work_{mode}_{n}"))
    for mode in ("pmap", "shard_map"):
        config = tiny_config(
            data_dir,
            num_epochs=EPOCHS,
            parallel=mode,
            num_devices=4,
            lr=PARALLEL_LR,
            epochs_per_program=EPOCHS,
            checkpoint_every_epochs=EPOCHS,
        )
        _save(out / f"{mode}_4_fused.npz", train.train_and_evaluate(config, out / f"fused_{mode}"))
    # One epoch in one mode, the second resumed from its checkpoint in the other.
    for first, second in (("pmap", "shard_map"), ("shard_map", "pmap")):
        workdir = out / f"work_{first}_then_{second}"
        train.train_and_evaluate(
            tiny_config(data_dir, num_epochs=1, parallel=first, num_devices=4, lr=PARALLEL_LR),
            workdir,
        )
        config = tiny_config(
            data_dir, num_epochs=EPOCHS, parallel=second, num_devices=4, lr=PARALLEL_LR
        )
        _save(out / f"{first}_then_{second}.npz", train.train_and_evaluate(config, workdir))


if __name__ == "__main__":
    run_all(Path(sys.argv[1]), Path(sys.argv[2]))
