r"""The study of section 5.2.4's exercises (docs/exercises.md): each exercise a grid of configs
(`mlp_jax.search.expand_grid`) trained as vmapped populations (`mlp_jax.sweep`), summarised
over seeds, and written to results/<name>.{json,md,png}.

  python -m experiments.studies.exercises.run --config=experiments/studies/exercises/width.py \
      [--quick] [--results_dir=results] [--workdir=runs/exercises]

An exercise file's get_config() holds `name`, `question`, `train` (an experiment config),
`sweep` (field -> values, crossed into a grid; "seed" gives the repeats), `quick_sweep` and
`quick_num_epochs` (the reduced grid for CI), `x` (the field on the plot's x axis) and `plot`
("line" for numeric x, "bars" for named choices, "curves" for accuracy against epoch).
Choices are judged on validation images held out of the training split; the test split is
evaluated once per model, after training, and only reported.
"""

import os
import time

import ml_collections
import numpy as np
from absl import flags
from matplotlib.figure import Figure
from ml_collections import config_flags

from benchmarks import report
from mlp_jax import config as config_lib
from mlp_jax import data, errors, files, metrics, models, plots, progress, search, sweep

FLAGS = flags.FLAGS
# What an exercise file holds (see the module's docstring), and one of them.
EXERCISE_FIELDS = (
    "name",
    "question",
    "train",
    "sweep",
    "quick_sweep",
    "quick_num_epochs",
    "x",
    "plot",
)
EXAMPLE = "experiments/studies/exercises/width.py"


def _define_flags() -> None:
    """The command line's flags (defined on demand: the tests import this module, and absl
    allows a flag name once)."""
    flags.DEFINE_string("results_dir", "results", "Where <name>.json/.md/.png go.")
    flags.DEFINE_string("workdir", "runs/exercises", "Per-group result files, reused on reruns.")
    flags.DEFINE_bool("quick", False, "Run the reduced grid (quick_sweep, quick_num_epochs).")
    config_flags.DEFINE_config_file(
        "config", None, "Exercise file, e.g. experiments/studies/exercises/width.py."
    )


def _fmt(mean: float, std: float) -> str:
    return "diverged" if not np.isfinite(mean) else f"{mean:.4f} ± {std:.4f}"


def markdown(exercise, rows: list[dict], point_keys: list[str], seconds: float) -> str:
    """The exercise's table (and, for curves, the best setting per epoch budget)."""
    head = " | ".join(point_keys)
    lines = [
        f"# {exercise.name}: {exercise.question}",
        "",
        f"| {head} | val acc | test acc | train loss | seeds | diverged |",
        "|" + "---|" * (len(point_keys) + 5),
    ]
    for r in rows:
        values = " | ".join(str(r[k]) for k in point_keys)
        stats = " | ".join(_fmt(r[k], r[f"{k}_std"]) for k in ("val_acc", "test_acc", "train_loss"))
        lines.append(f"| {values} | {stats} | {r['seeds']} | {r['diverged']} |")
    if exercise.plot == "curves":
        lines += ["", f"Best {exercise.x} per epoch budget (by mean val acc):", ""]
        lines += [f"| epochs | best {exercise.x} | val acc |", "|---:|---:|---:|"]
        num_epochs = len(rows[0]["val_acc_by_epoch"])
        for budget in [b for b in (1, 2, 3, 5, 10, 20, 30, 50) if b <= num_epochs]:
            scores = [np.nan_to_num(r["val_acc_by_epoch"][budget - 1], nan=-1) for r in rows]
            best = rows[int(np.argmax(scores))]
            lines.append(f"| {budget} | {best[exercise.x]} | {max(scores):.4f} |")
    lines += [
        "",
        f"{len(rows)} points; {seconds:.0f} s on {_machine()}, {time.strftime('%Y-%m-%d')}.",
    ]
    return "\n".join(lines) + "\n"


def _machine() -> str:
    """The processor and how many devices the populations were spread over."""
    import jax  # noqa: PLC0415

    return f"{report.describe_processor()}, {jax.device_count()} device(s)"


def plot(exercise, rows: list[dict], path: str | os.PathLike) -> None:
    """results/<name>.png: accuracy against the swept field, or against epoch."""
    fig = Figure(figsize=(6, 3.8), dpi=120)
    ax = fig.subplots()
    x = exercise.x
    if exercise.plot == "curves":
        for r in rows:
            curve = r["val_acc_by_epoch"]
            ax.plot(range(1, len(curve) + 1), curve, label=f"{x}={r[x]}")
        ax.set_xlabel("epoch")
        ax.set_ylim(0.5, 0.95)
        ax.legend(fontsize=7, ncol=2)
    else:
        labels = [str(r[x]) for r in rows]
        positions = np.arange(len(rows))
        val = [r["val_acc"] for r in rows]
        err = [r["val_acc_std"] for r in rows]
        if exercise.plot == "bars":
            ax.bar(positions, val, yerr=err, capsize=3, label="val acc", color="tab:blue")
            ax.plot(positions, [r["test_acc"] for r in rows], "k_", markersize=14, label="test acc")
            ax.set_ylim(max(0.0, np.nanmin(val) - 0.1) if np.isfinite(np.nanmin(val)) else 0, 1)
        else:
            ax.errorbar(positions, val, yerr=err, marker="o", capsize=3, label="val acc")
            ax.plot(positions, [r["test_acc"] for r in rows], "s--", label="test acc")
        ax.set_xticks(positions, labels, rotation=45 if len(rows) > 8 else 0, fontsize=8)
        ax.set_xlabel(x)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{exercise.name}: {exercise.question}", fontsize=8)
    fig.tight_layout()
    plots.save_figure(fig, path)


PLOTS = ("line", "bars", "curves")


def check_exercise(exercise, grid: dict) -> None:
    """Refuses an exercise whose plot cannot be drawn from its grid, before anything trains.

    Raises:
      UserError: naming the field and what it must be.
    """
    # The name of its files in --results_dir and its folder in --workdir: "../README"
    # replaced a README outside both.
    name = exercise.name
    plain = isinstance(name, str) and name == os.path.basename(name) and "\0" not in name
    if not (plain and name and not name.startswith(".")):
        raise errors.UserError(
            f"name={name!r} is invalid: the name of its result files, without '/' and not "
            "starting with '.'"
        )
    if exercise.plot not in PLOTS:
        raise errors.UserError(f"plot={exercise.plot!r} is invalid: one of {PLOTS}")
    if exercise.x not in grid or exercise.x == "seed":
        keys = [k for k in grid if k != "seed"]
        raise errors.UserError(f"x={exercise.x!r} is invalid: one of the grid's keys {keys}")


def run_exercise(
    exercise, results_dir: str | os.PathLike, workdir: str | os.PathLike, quick: bool = False
) -> list[dict]:
    """Trains an exercise's grid and writes its json, md and png into `results_dir` (local or
    remote); each population's results are kept in `workdir` and reused by a rerun.

    Returns:
      The summary rows (one per grid point).
    """
    grid = (exercise.quick_sweep if quick else exercise.sweep).to_dict()
    check_exercise(exercise, grid)
    train = ml_collections.ConfigDict(exercise.train.to_dict())
    if quick:
        train.num_epochs = exercise.quick_num_epochs
    labels, members = zip(*search.expand_grid(train, grid), strict=True)
    for member in members:
        models.resolve_model(member)  # Validates every member before anything trains.
    results_dir, workdir = files.as_path(results_dir), files.as_path(workdir)
    # Where the results go, before anything trains.
    outputs = tuple(f"{exercise.name}{suffix}" for suffix in (".json", ".md", ".png"))
    files.prepare_folder(results_dir, "--results_dir", regular_files=outputs)
    files.prepare_folder(workdir / exercise.name, "--workdir")
    dataset = data.load_dataset(train.data_dir, train.validation_size, train.split_seed)
    results = sweep.train_population(members, dataset, cache_dir=workdir / exercise.name)
    seconds = sum(r["train_seconds"] for r in results)
    point_keys = [k for k in grid if k != "seed"]
    rows = search.summarize(labels, results, point_keys)
    stem = results_dir / exercise.name
    record = {
        "name": exercise.name,
        "question": exercise.question,
        "quick": quick,
        "seconds": seconds,
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
        "grid": grid,
        "train": train.to_dict(),
        "rows": rows,
        "runs": [{"point": label, **r} for label, r in zip(labels, results, strict=True)],
    }
    files.write_record(stem.with_suffix(".json"), metrics.json_safe(record))
    files.write_atomically(stem.with_suffix(".md"), markdown(exercise, rows, point_keys, seconds))
    plot(exercise, rows, stem.with_suffix(".png"))
    return rows


def main() -> None:
    """Runs the exercise the flags name; user errors become one line."""
    exercise = config_lib.flag_config(FLAGS["config"], EXAMPLE, "an exercise file", EXERCISE_FIELDS)
    results_dir = report.output_path("results_dir")
    run_exercise(exercise, results_dir, FLAGS.workdir, FLAGS.quick)
    progress.show(files.read_text(files.as_path(results_dir) / f"{exercise.name}.md"))


if __name__ == "__main__":
    errors.run_command(main, _define_flags, start_devices=True)
