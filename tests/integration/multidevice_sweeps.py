"""Trains small populations over several CPU devices; run by multidevice_sweep_test.py in
subprocesses whose XLA_FLAGS fake the devices (JAX reads them once, at start-up).

Usage: python -m multidevice_sweeps DATA_DIR OUT_JSON [SIZES] (tests and tests/integration on
PYTHONPATH)
Writes {"<size>": {"all": results over every device, "one": results on one device,
"devices": devices the population was spread over}} for each population size in SIZES
(comma-separated; "5s": 5 members of one seed, which share a data order). Under
jax.distributed (several processes), only "all" is computed and process 0 writes the file.
"""

import json
import sys

import jax
from helpers import PARALLEL_LR, small_dataset, tiny_config

from mlp_jax import parallel, sweep


def population(data_dir: str, size: str) -> list:
    """`size` members differing in seed and learning rate: one group, one program; "Ns":
    N members of seed 0 differing in learning rate, which share one data order."""
    count, shared = int(size.removesuffix("s")), size.endswith("s")
    return [
        tiny_config(
            data_dir,
            num_epochs=2,
            seed=0 if shared else i,
            lr=PARALLEL_LR * (1 + (i / count if shared else i % 3)),
        )
        for i in range(count)
    ]


def main(data_dir: str, out: str, sizes: str) -> None:
    """Trains each population over every device (and on one device in a single process)."""
    parallel.maybe_initialize_distributed()
    spread = []
    place = parallel.place

    def recording_place(tree, sharding):
        spread.append(len(sharding.device_set))
        return place(tree, sharding)

    parallel.place = recording_place  # To report how many devices the populations used.
    dataset, results = small_dataset(), {}
    for size in sizes.split(","):
        configs = population(data_dir, size)
        spread.clear()
        entry = {"all": sweep.train_group(configs, dataset), "devices": max(spread)}
        if jax.process_count() == 1:
            one_device = parallel.make_mesh(jax.devices()[:1], sweep.POPULATION_AXIS)
            entry["one"] = sweep.train_group(configs, dataset, mesh=one_device)
        results[size] = entry
    if jax.process_index() == 0:
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "8,10")
