"""The speedrun's recipes, timed: each recipe for a target test accuracy trained on one device
over seeds, training seconds (per-epoch evaluation included) with compilation apart. What the
speedrun study (experiments/studies/speedrun/run.py) reports and searches with, and what the
device check measures on an accelerator; here, so that the check needs no study.

The recipe files stay beside the study: they are experiment configs, loaded by their path.
"""

import ml_collections
import numpy as np

from benchmarks import report
from mlp_jax import data, loop
from mlp_jax.config import load_experiment

# The recipe for each target.
RECIPES = {
    0.85: "experiments/studies/speedrun/recipe_085.py",
    0.90: "experiments/studies/speedrun/recipe_090.py",
}


def recipe_config(target: float) -> ml_collections.ConfigDict:
    """The experiment config of the recipe for `target`."""
    return load_experiment(RECIPES[target])


def train_recipe(config: ml_collections.ConfigDict, dataset: data.Dataset) -> dict:
    """One seed of a recipe on one device (`mlp_jax.loop.fit`), timed: training seconds
    (every epoch ended by a device sync, its evaluation included), compilation apart.

    Returns:
      {"seconds", "compile", "val_acc" (the last epoch's), "curve": [(training seconds so
      far, validation accuracy) per epoch]}.
    """
    one_device = ml_collections.ConfigDict({**config.to_dict(), "parallel": "none"})
    try:
        result = loop.fit(one_device, dataset)
    except loop.Diverged:  # A candidate of the search may; it is a row, not the end.
        nan = float("nan")
        return {"seconds": nan, "compile": nan, "val_acc": nan, "curve": []}
    seconds = np.cumsum([record["train_seconds"] for record in result.history])
    curve = [(float(s), r["val_acc"]) for s, r in zip(seconds, result.history, strict=True)]
    phases = result.phase_seconds
    return {
        "seconds": phases["train"],
        "compile": phases["compile"],
        "val_acc": curve[-1][1],
        "curve": curve,
    }


def over_seeds(config: ml_collections.ConfigDict, dataset: data.Dataset, seeds: int) -> dict:
    """`train_recipe` for seeds 0..seeds-1: the runs and their summaries."""
    runs = []
    for seed in range(seeds):
        seeded = ml_collections.ConfigDict(config.to_dict())
        seeded.seed = seed
        runs.append(train_recipe(seeded, dataset))
    return {
        "runs": runs,
        "acc": report.summarize([r["val_acc"] for r in runs]),
        **{k: float(np.mean([r[k] for r in runs])) for k in ("seconds", "compile")},
    }
