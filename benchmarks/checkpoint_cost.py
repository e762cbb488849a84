r"""What checkpointing every epoch costs: the chapter's 10 epochs with a checkpoint after each
epoch, and with one only after the last, in one process, in fresh workdirs.

  python -m benchmarks.checkpoint_cost [--epochs=10] [--repeats=2]
"""

import tempfile
from pathlib import Path

from absl import flags

from mlp_jax import errors, progress, train
from mlp_jax.config import load_experiment

FLAGS = flags.FLAGS


def _training_seconds(workdir: Path, epochs: int, every: int) -> float:
    config = load_experiment("experiments/mlp_scratch.py")
    config.num_epochs, config.checkpoint_every_epochs = epochs, every
    phases = train.train_and_evaluate(config, workdir).phase_seconds
    # The epochs (saves are asynchronous and overlap them) and the wait for the last save.
    return phases["epochs"] + phases["finish"]


def run(epochs: int = 10, repeats: int = 2) -> str:
    """Markdown: best-of-`repeats` seconds with and without per-epoch checkpoints."""
    best = {"every epoch": float("inf"), "last epoch only": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for label, every in (("every epoch", 1), ("last epoch only", epochs + 1)):
                workdir = Path(tmp) / f"{label.replace(' ', '_')}_{repeat}"
                best[label] = min(best[label], _training_seconds(workdir, epochs, every))
    overhead = best["every epoch"] / best["last epoch only"] - 1
    lines = ["| checkpoints | training + final save (s) |", "|---|---:|"]
    lines += [f"| {label} | {seconds:.2f} |" for label, seconds in best.items()]
    lines += ["", f"Checkpointing every epoch adds {100 * overhead:.1f} % (best of {repeats})."]
    return "\n".join(lines) + "\n"


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_integer("epochs", 10, "Epochs per run.", lower_bound=1)
    flags.DEFINE_integer("repeats", 2, "Runs per checkpoint setting.", lower_bound=1)


def main() -> None:
    """Prints the table."""
    progress.emit(run(FLAGS.epochs, FLAGS.repeats))


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
