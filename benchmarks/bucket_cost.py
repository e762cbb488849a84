r"""What a workdir in a bucket costs: the same `make train` run into a local folder and into
gs:// (a GCS emulator on 127.0.0.1, benchmarks.gcs_emulator), in fresh workdirs, alternated,
as whole processes; and a resumed run's start.

  python -m benchmarks.bucket_cost [--epochs=10] [--repeats=3]

The emulator stands for the network and answers in a fraction of a millisecond, but shares
the machine's cores with the run; a real bucket adds each request's round trip (tens of
milliseconds from a TPU VM in its region) to the requests a run makes: a few per file written
each epoch (metrics.jsonl, the TensorBoard file) and a few dozen per checkpoint, which Orbax
writes while the next epoch trains.
"""

import os
import statistics
import tempfile
from pathlib import Path

from absl import flags

from benchmarks import gcs_emulator, launch, report
from mlp_jax import errors, progress

FLAGS = flags.FLAGS

ROOT = Path(__file__).resolve().parents[1]


def _phases(stdout: str) -> dict[str, float]:
    line = next(x for x in stdout.splitlines() if x.startswith("phases (s): "))
    return {k: float(v) for k, v in (item.split() for item in line[12:].split(", "))}


def _run(workdir: str, epochs: int, env: dict) -> dict[str, float]:
    result = launch.run(
        "--config=experiments/mlp_scratch.py",
        f"--config.num_epochs={epochs}",
        f"--workdir={workdir}",
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
    return {"whole process": result.seconds, **_phases(result.stdout)}


def run(epochs: int = 10, repeats: int = 3) -> str:
    """Markdown: median seconds of each phase, local against the bucket, and their ratio."""
    local, bucket = [], []
    with tempfile.TemporaryDirectory() as tmp, gcs_emulator.running("bucket") as env:
        _run(str(Path(tmp) / "warm"), 1, {})  # The compilation cache, for both.
        for repeat in range(repeats):
            local.append(_run(str(Path(tmp) / f"local{repeat}"), epochs, {}))
            bucket.append(_run(f"gs://bucket/run{repeat}", epochs, env))
        resumed_local = _run(str(Path(tmp) / "local0"), epochs + 1, {})
        resumed_bucket = _run("gs://bucket/run0", epochs + 1, env)
    lines = [
        f"| {epochs} epochs, median of {repeats} | local (s) | gs:// (s) | gs:// / local |",
        "|---|---:|---:|---:|",
    ]
    for phase in local[0]:
        a = statistics.median(r[phase] for r in local)
        b = statistics.median(r[phase] for r in bucket)
        lines.append(f"| {phase} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    for phase in ("whole process", "state"):
        a, b = resumed_local[phase], resumed_bucket[phase]
        lines.append(f"| resumed, {phase} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    return "\n".join(lines) + "\n"


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_integer("epochs", 10, "Epochs per run.", lower_bound=1)
    flags.DEFINE_integer("repeats", 3, "Runs into each place, alternated.", lower_bound=1)


def main() -> None:
    """Prints the table with the machine it ran on."""
    progress.emit(report.header() + "\n" + run(FLAGS.epochs, FLAGS.repeats))


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
