r"""Joint hyperparameter search by successive halving over vmapped populations.

  python -m mlp_jax.tune --config=experiments/tune_search.py [--quick] \
      [--results_dir=results] [--workdir=runs/tune] [--tuned_config=experiments/mlp_tuned.py]

Candidates are drawn at random from the search space. Rung r trains every surviving
candidate from scratch for rungs[r] epochs (its schedule spanning that budget) and keeps the
best 1/eta by validation accuracy, so most of the compute goes to the promising few. Only the
training and validation splits are loaded: the test split is not read during the search.
The winner is written as an experiment config; `make train CONFIG=...` then reports its test
accuracy, once.
"""

import json
import math
import os
import textwrap
import time

import ml_collections
import numpy as np
from absl import app, flags
from matplotlib.figure import Figure
from ml_collections import config_flags

from experiments import mlp_concise
from mlp_jax import data, errors, files, metrics, models, plots, sweep
from mlp_jax.errors import UserError

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """The command line's flags (defined on demand: the library may import this module)."""
    flags.DEFINE_string("results_dir", "results", "Where tune.json and tune.png go.")
    flags.DEFINE_string("workdir", "runs/tune", "Per-population results, reused on reruns.")
    flags.DEFINE_string("tuned_config", "experiments/mlp_tuned.py", "Where the winner is written.")
    flags.DEFINE_bool("quick", False, "The reduced search (quick_*) for CI.")
    config_flags.DEFINE_config_file("config", None, "Search file, e.g. experiments/tune_search.py.")


def sample_candidates(train, space: dict, count: int, seed: int) -> list[ml_collections.ConfigDict]:
    """`count` distinct configs, each field of `space` drawn uniformly from its choices."""
    rng = np.random.default_rng(seed)
    total = math.prod(len(v) for v in space.values())
    if count > total:
        raise UserError(f"num_candidates={count} exceeds the {total} points of the search space")
    seen, candidates = set(), []
    while len(candidates) < count:
        choice = {key: values[rng.integers(len(values))] for key, values in space.items()}
        signature = json.dumps(choice, sort_keys=True)
        if signature in seen:
            continue
        seen.add(signature)
        candidate = ml_collections.ConfigDict(train.to_dict())
        candidate.update(choice)
        candidates.append(candidate)
    return candidates


def successive_halving(candidates, dataset, rungs, eta: int, cache_dir=None, kept=None):
    """Trains candidates on growing budgets, keeping the best 1/eta after each rung.

    Args:
      candidates: configs to search (their num_epochs is replaced by each rung's budget).
      dataset: train and validation splits; its test split is never read.
      rungs: epochs per rung, increasing.
      eta: the fraction 1/eta survives each rung.
      cache_dir: where finished populations are kept for reruns.
      kept: scores an earlier search recorded, {(candidate, epochs): entry} (see
        `recorded_scores`): those candidates are not trained again at those rungs.

    Returns:
      (history, seconds): one list per rung of {"candidate": index, "epochs", "val_acc",
      "val_loss", "curve": the validation accuracy after each epoch, "seconds" of training},
      best first; and the seconds of training, cached and kept scores included.
    """
    kept = kept or {}
    alive = list(range(len(candidates)))
    history = []
    for rung, epochs in enumerate(rungs):
        scored = [{**kept[i, epochs], "candidate": i} for i in alive if (i, epochs) in kept]
        to_train = [i for i in alive if (i, epochs) not in kept]
        configs = []
        for i in to_train:
            config = ml_collections.ConfigDict(candidates[i].to_dict())
            config.num_epochs = epochs
            configs.append(config)
        results = (
            sweep.train_population(configs, dataset, cache_dir=cache_dir, evaluate_test=False)
            if configs
            else []
        )
        for i, result in zip(to_train, results, strict=True):
            last = result["history"][-1]
            accuracy = last["val_acc"] if math.isfinite(last["train_loss"]) else 0.0
            scored.append(
                {
                    "candidate": i,
                    "epochs": epochs,
                    "val_acc": accuracy,
                    "val_loss": last["val_loss"],
                    "curve": [row["val_acc"] for row in result["history"]],
                    "seconds": result["train_seconds"],
                }
            )
        scored.sort(key=lambda r: -r["val_acc"])
        history.append(scored)
        if rung < len(rungs) - 1:
            alive = [r["candidate"] for r in scored[: max(1, math.ceil(len(scored) / eta))]]
    seconds = sum(r["seconds"] for rung in history for r in rung)
    return history, seconds


def _searched_config(train) -> dict:
    """The base config a search trains from, as its record keeps it: without the data's
    folder, which differs between machines and not between results."""
    return {k: v for k, v in metrics.json_safe(train.to_dict()).items() if k != "data_dir"}


def recorded_scores(record: dict | None, train, space: dict, candidates) -> dict:
    """The scores an earlier search's record holds for these candidates, {(index, epochs):
    entry}, so that a rerun (on a fresh clone, or with more candidates) trains only the rest.

    Only a record of the same base config and space counts; its candidates are matched to
    these by their drawn values, not by their place in the list.
    """
    if not record or record.get("train") != _searched_config(train):
        return {}
    if record.get("space") != metrics.json_safe(space):
        return {}
    index = {_choice_key(c, space): i for i, c in enumerate(candidates)}
    kept = {}
    for rung in record["history"]:
        for entry in rung:
            i = index.get(_choice_key(record["candidates"][entry["candidate"]], space))
            if i is not None:
                kept[i, entry["epochs"]] = {k: v for k, v in entry.items() if k != "candidate"}
    return kept


def _choice_key(candidate, space: dict) -> str:
    return json.dumps({k: candidate[k] for k in space}, sort_keys=True)


def draw_candidates(search, quick: bool) -> list[ml_collections.ConfigDict]:
    """The search's candidates: `num_candidates` points drawn from its space, less the
    points its `dropped` names (drawn, then left out for time; the record names them too)."""
    prefix = "quick_" if quick else ""
    space = search[f"{prefix}space"].to_dict()
    drawn = sample_candidates(search.train, space, search[f"{prefix}num_candidates"], search.seed)
    points = search.get(f"{prefix}dropped", ())
    dropped = {json.dumps(dict(point), sort_keys=True) for point in points}
    return [c for c in drawn if _choice_key(c, space) not in dropped]


def _python_literal(value) -> str:
    """Source text for a config value, quoted as ruff format would."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


# Fields a written experiment never carries: where this machine keeps the data.
_MACHINE_FIELDS = ("data_dir",)


def write_tuned_config(
    path: str | os.PathLike, winner: ml_collections.ConfigDict, title: str, note: str
) -> None:
    """Writes the winner as an ordinary experiment file built on the concise MLP: every
    field where it differs from experiments/mlp_concise.py, whether the search drew it or
    its base config set it, and the final training on all 60,000 images."""
    base = mlp_concise.get_config()
    fields = {
        k: v
        for k, v in sorted(winner.to_dict().items())
        if k not in _MACHINE_FIELDS and (k not in base or base[k] != v)
    }
    fields["num_epochs"] = winner.num_epochs
    fields["validation_size"] = 0  # The final model trains on all 60,000 images.
    body = "\n".join(f"    config.{k} = {_python_literal(v)}" for k, v in fields.items())
    files.write_atomically(
        files.as_path(path),
        f'r"""{title}\n\n'
        f"  make train CONFIG={path}\n\n{textwrap.fill(note, 92)}\n"
        '"""\n\nfrom experiments import mlp_concise\n\n\n'
        "def get_config():\n"
        '    """The search\'s winner; every other field as in experiments/mlp_concise.py."""\n'
        f"    config = mlp_concise.get_config()\n{body}\n    return config\n",
    )


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


def run_search(search, results_dir, workdir, tuned_config, quick: bool) -> dict:
    """Runs the search and writes results/tune.{json,png} and the tuned config.

    Args:
      search: the search's config (see experiments/tune_search.py).
      results_dir: where tune.json and tune.png go (a local or remote path).
      workdir: where each population's results are kept for reruns.
      tuned_config: the experiment file written for the winner.
      quick: run the reduced search (for tests).
    """
    prefix = "quick_" if quick else ""
    space = search[f"{prefix}space"].to_dict()
    rungs, eta = list(search[f"{prefix}rungs"]), search.eta
    candidates = draw_candidates(search, quick)
    for candidate in candidates:
        models.resolve_model(candidate)  # Validates every candidate before anything trains.
    train = search.train
    dataset = data.load_held_out_dataset(train.data_dir, train.validation_size, train.split_seed)
    results_dir = files.as_path(results_dir)
    record_path = results_dir / "tune.json"
    earlier = files.read_record(record_path)
    kept = recorded_scores(earlier, train, space, candidates)
    history, seconds = successive_halving(
        candidates, dataset, rungs, eta, cache_dir=workdir, kept=kept
    )
    winner = ml_collections.ConfigDict(candidates[history[-1][0]["candidate"]].to_dict())
    winner.num_epochs = search[f"{prefix}final_epochs"]
    results_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "quick": quick,
        "train": _searched_config(train),
        "seconds": seconds,
        "date": time.strftime("%Y-%m-%d"),
        "rungs": rungs,
        "eta": eta,
        "space": space,
        "candidates": [{k: c[k] for k in space} for c in candidates],
        "dropped": [dict(point) for point in search.get(f"{prefix}dropped", ())],
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
    write_tuned_config(tuned_config, winner, search.title, note)
    return record


def main(argv) -> None:
    """Runs the search the flags name; user errors become one line."""
    del argv
    with errors.one_line_errors():
        record = run_search(
            FLAGS.config,
            FLAGS.results_dir,
            FLAGS.workdir,
            FLAGS.tuned_config,
            FLAGS.quick,
        )
    print(json.dumps({"winner": record["winner"], "minutes": record["seconds"] / 60}))


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=errors.parse_flags)
