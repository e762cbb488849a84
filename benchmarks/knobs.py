r"""The knobs that cut launches, side by side in one run: `scan_unroll` and
`epochs_per_program` in float32 and bfloat16, each checked to train the parameters of its
dtype's first variant (by default unroll 1 with one epoch per program: the plain path).

  python -m benchmarks.knobs [--epochs=10] [--unrolls=1,4,16] [--per_program=1,10] [--repeats=3]

The chapter's scratch model on Fashion-MNIST, in this process through `mlp_jax.loop.fit` on
one device: "loop" is the wall time of the whole epoch loop (every epoch's training and
validation and the host's work between them, compilation apart), the time a user waits.
Each variant runs `repeats` times, the variants interleaved so that a slow spell of the
machine spreads over all of them; the table gives each one's median. The populations' knob
(`share_data_order`) is measured by `benchmarks.sweep_speed`.
"""

import itertools

import jax
import numpy as np
from absl import flags

from benchmarks import report
from mlp_jax import data, errors, loop, progress
from mlp_jax.config import load_experiment

FLAGS = flags.FLAGS

DTYPES = ("float32", "bfloat16")


def measure(
    dataset: data.Dataset,
    epochs: int,
    unrolls: tuple[int, ...],
    per_program: tuple[int, ...],
    dtypes: tuple[str, ...] = DTYPES,
    repeats: int = 1,
) -> list[dict]:
    """One row per (dtype, unroll, epochs per program): the median seconds of `repeats`
    runs, test accuracy, and whether the parameters are the reference's of that dtype
    (None for the reference itself)."""
    variants = list(itertools.product(dtypes, unrolls, per_program))
    rows = {v: {"loops": []} for v in variants}
    reference = {}
    for _, (dtype, unroll, per) in itertools.product(range(repeats), variants):
        config = load_experiment("experiments/mlp_scratch.py")
        config.num_epochs, config.compute_dtype, config.parallel = epochs, dtype, "none"
        config.scan_unroll, config.epochs_per_program = unroll, per
        result = loop.fit(config, dataset)
        params = [np.asarray(x) for x in jax.tree.leaves(result.state.params)]
        reference.setdefault(dtype, ((unroll, per), params))
        reference_variant, reference_params = reference[dtype]
        same = all(np.array_equal(a, b) for a, b in zip(params, reference_params, strict=True))
        row = rows[dtype, unroll, per]
        row["loops"].append(result.phase_seconds["loop"])
        row.setdefault("compile", result.phase_seconds["compile"])
        row["test_acc"] = result.history[-1]["val_acc"]
        is_reference = (unroll, per) == reference_variant
        row["same_params"] = None if is_reference else same and row.get("same_params", True)
    return [
        {
            "dtype": dtype,
            "scan_unroll": unroll,
            "epochs_per_program": per,
            "loop": float(np.median(rows[dtype, unroll, per].pop("loops"))),
            **rows[dtype, unroll, per],
        }
        for dtype, unroll, per in variants
    ]


def markdown(rows: list[dict], epochs: int) -> str:
    """The rows as a table, each loop time also as a speed relative to its dtype's
    reference (higher is faster)."""
    reference = {}
    lines = [
        f"The chapter's scratch model, {epochs} epochs on one device; loop: the whole epoch "
        "loop (training, validation, host work; compilation apart), the median of the "
        "repeats; params: those of the first row of the same dtype, bit for bit.",
        "",
        "| dtype | scan_unroll | epochs per program | compile (s) | loop (s) | speed | "
        "test acc | params |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        base = reference.setdefault(r["dtype"], r["loop"])
        same = {True: "same", False: "DIFFER", None: "reference"}[r["same_params"]]
        lines.append(
            f"| {r['dtype']} | {r['scan_unroll']} | {r['epochs_per_program']} | "
            f"{r['compile']:.2f} | {r['loop']:.3f} | {base / r['loop']:.2f}x | "
            f"{r['test_acc']:.4f} | {same} |"
        )
    return "\n".join(lines) + "\n"


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_integer("epochs", 10, "Epochs per run.", lower_bound=1)
    report.define_counts("unrolls", ["1", "4", "16"], "The scan_unroll values.")
    report.define_counts("per_program", ["1", "10"], "The epochs_per_program values.")
    flags.DEFINE_list("dtypes", list(DTYPES), "The compute dtypes.")
    flags.register_validator(
        "dtypes",
        lambda dtypes: bool(dtypes) and set(dtypes) <= set(DTYPES),
        f"give one or more of {', '.join(DTYPES)}",
    )
    flags.DEFINE_integer("repeats", 3, "Timed runs per setting.", lower_bound=1)


def main() -> None:
    """Prints the machine and the table."""
    rows = measure(
        data.load_dataset(),
        FLAGS.epochs,
        tuple(int(x) for x in FLAGS.unrolls),
        tuple(int(x) for x in FLAGS.per_program),
        tuple(FLAGS.dtypes),
        FLAGS.repeats,
    )
    progress.emit(report.header() + "\n" + markdown(rows, FLAGS.epochs))


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
