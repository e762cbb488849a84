r"""Where a `make train` run's time goes, and what the persistent compilation cache saves:
the same command twice with a fresh cache, whole-process seconds and the run's phases.

  python -m benchmarks.startup [--epochs=10]
"""

import os
import tempfile
from pathlib import Path

from absl import flags

from benchmarks import launch
from mlp_jax import errors, progress

FLAGS = flags.FLAGS

ROOT = Path(__file__).resolve().parents[1]


def timed_run(workdir: Path, cache: Path, epochs: int) -> dict:
    """One CLI training run: whole-process seconds and the phases it prints."""
    result = launch.run(
        "--config=experiments/mlp_scratch.py",
        f"--config.num_epochs={epochs}",
        f"--workdir={workdir}",
        cwd=ROOT,
        env={**os.environ, "MLP_JAX_COMPILATION_CACHE": str(cache)},
        check=True,
    )
    whole = result.seconds
    line = next(x for x in result.stdout.splitlines() if x.startswith("phases (s): "))
    phases = {k: float(v) for k, v in (item.split() for item in line[12:].split(", "))}
    # Interpreter start-up and imports: everything before train_and_evaluate began.
    return {"whole": whole, "start-up and imports": whole - sum(phases.values()), **phases}


def markdown(first: dict, second: dict) -> str:
    """The two runs side by side."""
    lines = ["| phase | first run (s) | second run, cached (s) |", "|---|---:|---:|"]
    lines += [f"| {k} | {first[k]:.2f} | {second[k]:.2f} |" for k in first]
    return "\n".join(lines) + "\n"


def timed_runs(epochs: int) -> tuple[dict, dict]:
    """Two runs of the scratch experiment into fresh workdirs, sharing a fresh cache: the
    first compiles, the second finds its programs in the cache."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        first = timed_run(tmp / "first", tmp / "cache", epochs)
        second = timed_run(tmp / "second", tmp / "cache", epochs)
    return first, second


def run(epochs: int) -> str:
    """`timed_runs` as a table."""
    return markdown(*timed_runs(epochs))


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_integer("epochs", 10, "Epochs per run.", lower_bound=1)


def main() -> None:
    """Prints the table."""
    progress.emit(run(FLAGS.epochs))


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
