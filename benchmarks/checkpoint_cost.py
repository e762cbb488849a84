r"""What checkpointing every epoch costs: the chapter's 10 epochs with a checkpoint after each
epoch, and with one only after the last, in one process, in fresh workdirs.

  python -m benchmarks.checkpoint_cost [--epochs=10] [--repeats=2]
"""

import argparse
import tempfile
from pathlib import Path

from mlp_jax import train
from mlp_jax.config import load_experiment


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


def main() -> None:
    """Prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(run(args.epochs, args.repeats))


if __name__ == "__main__":
    main()
