r"""The joint search study (docs/search.md): successive halving over vmapped populations
(`mlp_jax.search`), its record and figure, and the winner written as an experiment file.

  python -m experiments.studies.search.run \
      --config=experiments/studies/search/joint_search.py [--quick] [--results_dir=results] \
      [--workdir=runs/tune] [--tuned_config=experiments/studies/search/mlp_tuned.py]

Candidates are drawn at random from the search space. Rung r trains every surviving
candidate from scratch for rungs[r] epochs (its schedule spanning that budget) and keeps the
best 1/eta by validation accuracy, so most of the compute goes to the promising few. Only the
training and validation splits are loaded: the test split is not read during the search.
The winner is written as an experiment config; `make train CONFIG=...` then reports its test
accuracy, once.
"""

import json
import os
import textwrap
import time

import ml_collections
from absl import flags
from matplotlib.figure import Figure
from ml_collections import config_flags

from benchmarks import report
from mlp_jax import config as config_lib
from mlp_jax import data, errors, files, metrics, models, plots, progress, search
from mlp_jax.config import base_config
from mlp_jax.errors import UserError

FLAGS = flags.FLAGS
# What a search file holds (see joint_search.py), and one of them.
SEARCH_FIELDS = (
    "title",
    "train",
    "space",
    "num_candidates",
    "rungs",
    "eta",
    "final_epochs",
    "seed",
)
EXAMPLE = "experiments/studies/search/joint_search.py"


def _define_flags() -> None:
    """The command line's flags (defined on demand: the tests import this module, and absl
    allows a flag name once)."""
    flags.DEFINE_string("results_dir", "results", "Where tune.json and tune.png go.")
    flags.DEFINE_string("workdir", "runs/tune", "Per-population results, reused on reruns.")
    flags.DEFINE_string(
        "tuned_config",
        "experiments/studies/search/mlp_tuned.py",
        "Where the winner is written.",
    )
    flags.DEFINE_bool("quick", False, "The reduced search (quick_*) for CI.")
    config_flags.DEFINE_config_file(
        "config", None, "Search file, e.g. experiments/studies/search/joint_search.py."
    )


def _python_literal(value) -> str:
    """Source text for a config value, quoted as ruff format would."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


# Fields a written experiment never carries: where this machine keeps the data.
_MACHINE_FIELDS = ("data_dir",)


# The docstring of every experiment file a search writes, by which it knows one it may
# replace from any other (a user's own experiment, named by mistake).
WINNER_DOCSTRING = "The search's winner; every other field as in mlp_jax.config.base_config()."


def check_tuned_config(path: str | os.PathLike) -> None:
    """Refuses, before the search trains, a `path` where a file stands that no search wrote:
    it would be replaced at the end.

    Raises:
      UserError: naming it and the fix.
    """
    path = files.as_path(path)
    # As bytes: a user's file need not be UTF-8 to be theirs.
    written = WINNER_DOCSTRING.encode()
    if files.require_kind(path, "a file") and written not in files.read_bytes(path):
        raise UserError(
            f"{path}: an experiment file no search wrote, which the winner would replace; "
            "give another --tuned_config, or move it away"
        )


def write_tuned_config(
    path: str | os.PathLike, winner: ml_collections.ConfigDict, title: str, note: str
) -> None:
    """Writes the winner as an ordinary experiment file, whatever its model: every field
    where it differs from `mlp_jax.config.base_config()` (its model and the model's fields
    among them, whether the search drew them or its base config set them), and the final
    training on all 60,000 images."""
    base = base_config()
    fields = {
        k: v
        for k, v in sorted(winner.to_dict().items())
        if k not in _MACHINE_FIELDS and (k not in base or base[k] != v)
    }
    fields["num_epochs"] = winner.num_epochs
    fields["validation_size"] = 0  # The final model trains on all 60,000 images.
    body = "\n".join(f"    config.{k} = {_python_literal(v)}" for k, v in fields.items())
    docstring = f"{title}\n\n  make train CONFIG={path}\n\n{textwrap.fill(note, 92)}\n"
    files.write_atomically(
        files.as_path(path),
        f"{_string_literal(docstring)}\n\nfrom mlp_jax.config import base_config\n\n\n"
        "def get_config():\n"
        f'    """{WINNER_DOCSTRING}"""\n'
        f"    config = base_config()\n{body}\n    return config\n",
    )


def _string_literal(text: str) -> str:
    """`text` as a triple-quoted Python string, whatever it holds: a title holding quotes or
    a backslash, put in as it was, made the winner's file invalid Python."""
    return '"""' + text.replace("\\", "\\\\").replace('"', '\\"') + '"""'


def figure(history, labels: dict[int, str] | None = None) -> Figure:
    """Validation accuracy of every candidate at every rung it reached, against epochs (for
    several rungs on a log scale, the rung budgets labelled plainly): epoch by epoch where the
    record holds the curves, else one point per rung. `labels` ({candidate: text}) name the
    candidates in a legend when there are at most 8."""
    fig = Figure(figsize=(5.5, 3.6), dpi=120)
    ax = fig.subplots()
    reached: dict[int, list[dict]] = {}
    for rung in history:
        for r in rung:
            reached.setdefault(r["candidate"], []).append(r)
    show_legend = labels is not None and len(reached) <= 8
    curves = all("curve" in r for rung in history for r in rung)
    for number, (candidate, records) in enumerate(sorted(reached.items())):
        color = f"C{number % 10}"
        label = labels[candidate] if show_legend else None
        if curves:
            for r in records:
                epochs = range(1, len(r["curve"]) + 1)
                ax.plot(epochs, r["curve"], "-", color=color, alpha=0.7, lw=0.9, label=label)
                ax.plot(r["epochs"], r["val_acc"], "o", color=color, markersize=3)
                label = None
        else:
            xs = [r["epochs"] for r in records]
            ys = [r["val_acc"] for r in records]
            ax.plot(xs, ys, "o-", color=color, alpha=0.6, markersize=3, label=label)
    if len(history) > 1:
        ax.set_xscale("log")
        budgets = [rung[0]["epochs"] for rung in history]
        ax.set_xticks(budgets, [str(epochs) for epochs in budgets])
        ax.minorticks_off()  # The log scale's minor labels (3x10^0, 4x10^0, ...) would overlap.
        ax.set_xlabel("epochs (log scale; the rung budgets marked)")
    else:
        ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    best = max(r["val_acc"] for rung in history for r in rung)
    spread = 0.1 if len(history) > 1 else 0.04
    ax.set_ylim(max(0.5, best - spread), best + 0.01)
    ax.grid(alpha=0.3)
    title = "successive halving" if len(history) > 1 else "one rung"
    ax.set_title(f"{title}: each colour is one candidate", fontsize=9)
    if show_legend:
        ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    return fig


def run_search(search_config, results_dir, workdir, tuned_config, quick: bool) -> dict:
    """Runs the search and writes results/tune.{json,png} and the tuned config.

    Args:
      search_config: the search's config (see experiments/studies/search/joint_search.py).
      results_dir: where tune.json and tune.png go (a local or remote path).
      workdir: where each population's results are kept for reruns.
      tuned_config: the experiment file written for the winner.
      quick: run the reduced search (for tests).
    """
    prefix = "quick_" if quick else ""
    space = search_config[f"{prefix}space"].to_dict()
    rungs, eta = list(search_config[f"{prefix}rungs"]), search_config.eta
    search.check_halving(rungs, eta)
    candidates = search.draw_candidates(search_config, quick)
    for candidate in candidates:
        models.resolve_model(candidate)  # Validates every candidate before anything trains.
    # And where the results go, so that a search of hours cannot fail at its last line.
    files.prepare_folder(files.as_path(results_dir), "--results_dir")
    files.prepare_folder(files.as_path(tuned_config).parent, "--tuned_config's folder")
    check_tuned_config(tuned_config)
    train = search_config.train
    dataset = data.load_held_out_dataset(train.data_dir, train.validation_size, train.split_seed)
    results_dir = files.as_path(results_dir)
    record_path = results_dir / "tune.json"
    earlier = search.read_record(record_path)
    kept = search.recorded_scores(earlier, train, space, candidates)
    history, seconds = search.successive_halving(
        candidates, dataset, rungs, eta, cache_dir=workdir, kept=kept
    )
    winner = ml_collections.ConfigDict(candidates[history[-1][0]["candidate"]].to_dict())
    winner.num_epochs = search_config[f"{prefix}final_epochs"]
    record = {
        "quick": quick,
        "train": search.searched_config(train),
        "seconds": seconds,
        "date": time.strftime("%Y-%m-%d"),
        "rungs": rungs,
        "eta": eta,
        "space": space,
        "candidates": [{k: c[k] for k in space} for c in candidates],
        "dropped": [dict(point) for point in search_config.get(f"{prefix}dropped", ())],
        "history": history,
        "winner": {k: winner[k] for k in space},
    }
    files.write_record(record_path, metrics.json_safe(record))
    labels = {i: ", ".join(f"{k}={c[k]}" for k in space) for i, c in enumerate(candidates)}
    plots.save_figure(figure(history, labels), results_dir / "tune.png")
    best = history[-1][0]
    note = (
        f"Chosen {record['date']} from {len(candidates)} candidates over rungs of {rungs} epochs "
        f"(eta {eta}) in {seconds / 60:.0f} min; validation accuracy {best['val_acc']:.4f} on "
        f"{train.validation_size:,} held-out training images at the last rung; trained here "
        f"for {winner.num_epochs} epochs on all 60,000."
    )
    write_tuned_config(tuned_config, winner, search_config.title, note)
    return record


def main() -> None:
    """Runs the search the flags name; user errors become one line."""
    search_config = config_lib.flag_config(FLAGS["config"], EXAMPLE, "a search file", SEARCH_FIELDS)
    record = run_search(
        search_config,
        report.output_path("results_dir"),
        FLAGS.workdir,
        report.output_path("tuned_config"),
        FLAGS.quick,
    )
    progress.show(json.dumps({"winner": record["winner"], "minutes": record["seconds"] / 60}))


if __name__ == "__main__":
    errors.run_command(main, _define_flags, start_devices=True)
