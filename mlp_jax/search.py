"""Searching over configs, as mechanisms the studies share: grids of configs and their
summaries over seeds; candidates drawn at random from a space; successive halving over
vmapped populations (`mlp_jax.sweep`), resumable from the record an earlier search wrote.

Every search here chooses on validation images held out of the training split; none reads
the test split.
"""

import itertools
import json
import math

import ml_collections
import numpy as np

from mlp_jax import config as config_lib
from mlp_jax import files, metrics, sweep
from mlp_jax.errors import UserError

# The most points a grid may have: its configs are all made before the first trains (a
# million took minutes and gigabytes); the largest study's grid has a few hundred.
MAX_POINTS = 10_000


def expand_grid(
    train: ml_collections.ConfigDict, grid: dict
) -> list[tuple[dict, ml_collections.ConfigDict]]:
    """Every combination of the grid's values applied to a copy of `train`.

    A grid key that names a train field sets it. Any other key is a set of named variants:
    its values are dicts with a "name" and the fields to set (e.g. an initialiser and its
    scale together).

    Returns:
      (label, config) pairs; the label maps each grid key to the value shown for it.

    Raises:
      UserError: a key has no values, a value twice or one of another kind than its field,
        or names neither a field nor named variants; the grid has more than MAX_POINTS.
    """
    check_choices(grid, "sweep")
    points = math.prod(len(values) for values in grid.values())
    if points > MAX_POINTS:  # Each point a config in memory, before any trains.
        raise UserError(f"the sweep has {points:,} points, more than {MAX_POINTS:,}; give fewer")
    keys = list(grid)
    members = []
    for values in itertools.product(*(grid[k] for k in keys)):
        member = ml_collections.ConfigDict(train.to_dict())
        label = {}
        for key, value in zip(keys, values, strict=True):
            if key in member:
                try:
                    member[key] = label[key] = value
                except TypeError:  # ml_collections keeps each field's type.
                    kind = type(member[key]).__name__
                    raise UserError(
                        f"sweep key {key!r} has {value!r} among its values; give values of "
                        f"the field's kind ({kind})"
                    ) from None
            elif isinstance(value, dict) and "name" in value:
                label[key] = value["name"]
                for field, setting in value.items():
                    if field != "name":
                        member[field] = setting
            else:
                raise UserError(
                    f"sweep key {key!r} is neither a train field nor a list of named variants"
                )
        members.append((label, member))
    return members


def check_choices(choices: dict, what: str) -> None:
    """Refuses a grid or a search space with a key whose choices are not a non-empty list
    (an empty list would train nothing, silently).

    Raises:
      UserError: naming the key.
    """
    if not choices:
        raise UserError(f"the {what} is empty; give at least one key and its values")
    for key, values in choices.items():
        if not isinstance(values, list | tuple) or not values:
            raise UserError(
                f"{what} key {key!r} has {values!r} for its values; give a non-empty list"
            )
        shown = [json.dumps(v, sort_keys=True, default=repr) for v in values]
        if len(set(shown)) < len(shown):  # One model counted twice, as two seeds say.
            raise UserError(f"{what} key {key!r} has a value twice in {values!r}; give each once")


def check_halving(rungs, eta) -> None:
    """Refuses a halving schedule that cannot run: rungs must be increasing whole numbers
    of epochs from 1, and eta a whole number from 2 (the fraction 1/eta kept).

    Raises:
      UserError: naming the setting.
    """
    rungs = list(rungs)
    whole = all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in rungs)
    if not rungs or not whole or rungs != sorted(set(rungs)):
        raise UserError(f"rungs={rungs} is invalid: give increasing whole numbers of epochs >= 1")
    if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
        raise UserError(f"eta={eta!r} is invalid: give a whole number >= 2 (1/eta is kept)")


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def summarize(labels: list[dict], results: list[dict], point_keys: list[str]) -> list[dict]:
    """Mean ± std over seeds for every grid point (the sweep's non-seed values)."""
    points: dict[tuple, list[int]] = {}
    for i, label in enumerate(labels):
        points.setdefault(tuple(label[k] for k in point_keys), []).append(i)
    rows = []
    for point, indices in points.items():
        runs = [results[i] for i in indices]
        final = [r["history"][-1] for r in runs]
        row = dict(zip(point_keys, point, strict=True))
        row["seeds"] = len(runs)
        row["diverged"] = sum(not np.isfinite(f["train_loss"]) for f in final)
        for key, values in (
            ("val_acc", [f["val_acc"] for f in final]),
            ("test_acc", [r["test_acc"] for r in runs]),
            ("train_loss", [f["train_loss"] for f in final]),
        ):
            row[key], row[f"{key}_std"] = _mean_std(values)
        row["val_acc_by_epoch"] = [
            _mean_std([r["history"][e]["val_acc"] for r in runs])[0]
            for e in range(len(runs[0]["history"]))
        ]
        rows.append(row)
    return rows


def sample_candidates(train, space: dict, count: int, seed: int) -> list[ml_collections.ConfigDict]:
    """`count` distinct configs, each field of `space` drawn uniformly from its choices.

    Raises:
      UserError: an empty space or choice, or a count outside 1..the points of the space.
    """
    check_choices(space, "search space")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise UserError(f"num_candidates={count!r} is invalid: give a whole number >= 1")
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

    Raises:
      UserError: the rungs or eta cannot run (`check_halving`), before anything trains.
    """
    check_halving(rungs, eta)
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


def searched_config(train) -> dict:
    """The base config a search trains from, as its record keeps it: without the data's
    folder, which differs between machines and not between results."""
    return {
        k: v
        for k, v in metrics.json_safe(train.to_dict()).items()
        if not config_lib.declared(k).local
    }


# What a search's record (tune.json, which experiments/studies/search/run.py writes) holds
# that is read back: by a rerun (`recorded_scores`) and by the best study's report. Its base
# config ("train") is not required: records written before it was kept have none, and a
# rerun trains every candidate again.
RECORD_SHAPE = {
    "space": dict,
    "seconds": float,
    "date": str,
    "candidates": [dict],
    "history": [[{"candidate": int, "epochs": int, "val_acc": float}]],
}


def read_record(path) -> dict | None:
    """The search's record at `path` (None where there is none), checked as it is read.

    Raises:
      UserError: not a search's record (edited by hand, say), naming the file.
    """
    record = files.read_record(path, RECORD_SHAPE)
    if record is None:
        return None
    count = len(record["candidates"])
    if not isinstance(record.get("train", {}), dict):
        problem = "record['train'] is not an object"
    elif not record["history"]:
        problem = "no rungs"
    elif not all(record["history"]):
        problem = "a rung of no candidates"
    elif any(not 0 <= entry["candidate"] < count for rung in record["history"] for entry in rung):
        problem = f"a score of a candidate outside its {count} candidates"
    else:
        return record
    raise UserError(f"{path}: {problem}: not a search's record; delete it to search again")


def recorded_scores(record: dict | None, train, space: dict, candidates) -> dict:
    """The scores an earlier search's record holds for these candidates, {(index, epochs):
    entry}, so that a rerun (on a fresh clone, or with more candidates) trains only the rest.

    Only a record of the same base config and space counts; its candidates are matched to
    these by their drawn values, not by their place in the list.
    """
    if not record or not _same_base(record.get("train"), train):
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


def _same_base(recorded: dict | None, train) -> bool:
    """Whether a record's base config is `train`'s. A library field added since the record
    was written takes its default, which is the behaviour the search had (as a workdir's
    config.json is read). How populations run (the fields only they read, e.g. a shared
    data order) does not count: it changes the scores only to float rounding."""
    if recorded is None:
        return False

    def counted(config: dict) -> dict:
        only_populations = config_lib.names(config_lib.Field.population_only)
        return {k: v for k, v in config.items() if k not in only_populations}

    defaults = searched_config(config_lib.base_config())
    return counted({**defaults, **recorded}) == counted(searched_config(train))


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
