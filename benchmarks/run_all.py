r"""`make bench`: every benchmark in one run, written to results/bench.md.

  python -m benchmarks.run_all [--out=results/bench.md] [--quick]

The machine, the date and the library versions head the file; a peer whose library is
missing appears as skipped.
"""

import argparse
import contextlib
import importlib.metadata
import platform
import time
from pathlib import Path

import jax

from benchmarks import (
    checkpoint_cost,
    hardware,
    parallel_speed,
    startup,
    sweep_speed,
    train_speed,
)

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "clu", "torch", "keras")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header() -> str:
    """The machine, date and versions the numbers belong to."""
    device = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    versions = ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
    return (
        f"Measured {time.strftime('%Y-%m-%d')} on {cpu} ({jax.local_device_count()} JAX device(s): "
        f"{device.platform}, {device.device_kind}); {versions}.\n"
    )


def main() -> None:
    """Runs the benchmarks and writes the Markdown file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/bench.md")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    args = parser.parse_args()
    epochs = 1 if args.quick else 10
    peers = ("mlp_jax", "flax_loop") if args.quick else train_speed.PEERS
    rows = [train_speed.run_peer_process(peer, epochs) for peer in peers]
    sections = [
        "# Benchmarks\n",
        header(),
        f"## Training speed: the chapter's run ({epochs} epochs), each peer in its own process\n",
        train_speed.table(rows, epochs) + "\n",
        "## Vmapped populations (mlp_jax.sweep)\n",
        sweep_speed.run(
            "1,2" if args.quick else sweep_speed.default_sizes(), 1 if args.quick else 2
        ),
        "## Data parallelism: examples/s per mode and device count\n",
        parallel_speed.run("1,2" if args.quick else "1,2,4,8"),
        "## Checkpointing cost\n",
        checkpoint_cost.run(2 if args.quick else 10, 1 if args.quick else 2),
        "## Start-up: first run vs second run with the persistent compilation cache\n",
        startup.run(epochs),
        "## Hardware exercises\n",
        hardware.run(args.quick),
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(sections))
    print(out.read_text())


if __name__ == "__main__":
    main()
