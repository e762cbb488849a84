r"""`make bench`: every benchmark in one run, written to results/bench.md.

  python -m benchmarks.run_all [--out=results/bench.md] [--quick]

The machine (the CPU's model and matrix flags, or the accelerator), the date and the library
versions head the file; then the machine's ceiling for the chapter's products, which every
peer's achieved rate is a fraction of; a peer whose library is missing appears as skipped.
"""

from pathlib import Path

from absl import flags

from benchmarks import (
    ceiling,
    checkpoint_cost,
    hardware,
    parallel_speed,
    precision,
    report,
    startup,
    sweep_speed,
    train_speed,
)
from mlp_jax import errors, files, progress

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_string("out", "results/bench.md", "The Markdown file to write.")
    flags.DEFINE_bool("quick", False, "Tiny sizes, for tests.")


def main() -> None:
    """Runs the benchmarks and writes the Markdown file."""
    epochs = 1 if FLAGS.quick else 10
    peers = ("mlp_jax", "flax_loop") if FLAGS.quick else train_speed.PEERS
    ceiling_rows = ceiling.run(FLAGS.quick)
    rows = [train_speed.run_peer_process(peer, epochs) for peer in peers]
    sections = [
        "# Benchmarks\n",
        report.header(),
        "## The ceiling: an epoch of only the model's matrix products\n",
        ceiling.markdown(ceiling_rows),
        f"## Training speed: the chapter's run ({epochs} epochs), each peer in its own process\n",
        'GFLOP/s counts the matrix products only (`benchmarks.ceiling`); "of ceiling" divides '
        "it by the ceiling above for the peer's dtype.\n",
        train_speed.table(rows, epochs, ceiling.chapter_ceiling(ceiling_rows)) + "\n",
        "## Mixed precision: accuracy over seeds in float32 and bfloat16\n",
        precision.run(2, 1) if FLAGS.quick else precision.run(),
        "## Vmapped populations (mlp_jax.sweep)\n",
        sweep_speed.run(
            "1,2" if FLAGS.quick else sweep_speed.default_sizes(), 1 if FLAGS.quick else 2
        ),
        "## Data parallelism: examples/s per mode and device count\n",
        parallel_speed.run("1,2" if FLAGS.quick else "1,2,4,8"),
        "## Checkpointing cost\n",
        checkpoint_cost.run(2 if FLAGS.quick else 10, 1 if FLAGS.quick else 2),
        "## Start-up: first run vs second run with the persistent compilation cache\n",
        startup.run(epochs),
        "## Hardware exercises\n",
        hardware.run(FLAGS.quick),
    ]
    out = Path(report.output_path("out"))
    out.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomically(out, "\n".join(sections))
    progress.show(out.read_text())


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
