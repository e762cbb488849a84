"""The search mechanisms on small synthetic data: grids, drawn candidates, successive
halving, and a rerun that keeps what an earlier search recorded."""

import json
import re

import ml_collections
import pytest
from helpers import ROOT, small_dataset, tiny_config

from mlp_jax import config as config_lib
from mlp_jax import search
from mlp_jax.errors import UserError


@pytest.fixture(scope="module")
def dataset():
    return small_dataset(with_test=False)


def test_named_variants_set_several_fields():
    init = config_lib.load_module(ROOT / "experiments" / "studies" / "exercises" / "init.py")
    members = search.expand_grid(init.get_config().train, {"init": init.INITS[:2], "seed": [0, 1]})
    assert len(members) == 4
    label, config = members[2]
    assert label == {"init": "normal(1.0)", "seed": 0}
    assert (config.weight_init, config.init_scale) == ("normal", 1.0)


@pytest.mark.slow
def test_halving_keeps_the_best_candidates_without_a_test_split(synthetic_dir, dataset):
    base = tiny_config(synthetic_dir)
    space = {"lr": [1e-6, 0.5], "num_hiddens": [16, 32]}
    candidates = search.sample_candidates(base, space, count=4, seed=0)
    assert len({json.dumps(c.to_dict(), sort_keys=True) for c in candidates}) == 4
    history, seconds = search.successive_halving(candidates, dataset, rungs=[1, 2], eta=2)
    assert seconds > 0
    assert [len(rung) for rung in history] == [4, 2]
    survivors = [candidates[r["candidate"]] for r in history[-1]]
    assert all(c.lr == 0.5 for c in survivors)  # lr 1e-6 cannot learn in an epoch.
    assert all(r["epochs"] == 2 for r in history[-1])
    assert history[0][0]["val_acc"] >= history[0][-1]["val_acc"]
    assert all(len(r["curve"]) == r["epochs"] for rung in history for r in rung)
    assert all(r["curve"][-1] == r["val_acc"] for rung in history for r in rung)


def test_too_many_candidates_is_a_user_error(synthetic_dir):
    with pytest.raises(Exception, match="exceeds the 2 points"):
        search.sample_candidates(tiny_config(synthetic_dir), {"lr": [0.1, 0.2]}, count=3, seed=0)


def _record_of(base, space, candidates, history):
    """What run_search writes, reduced to what `recorded_scores` reads."""
    return {
        "train": search.searched_config(base),
        "space": space,
        "candidates": [{k: c[k] for k in space} for c in candidates],
        "history": json.loads(json.dumps(history)),
    }


def test_a_rerun_keeps_recorded_scores_and_trains_only_the_rest(
    synthetic_dir, dataset, monkeypatch
):
    base = tiny_config(synthetic_dir)
    space = {"lr": [1e-6, 0.5], "num_hiddens": [16, 32]}
    first = search.sample_candidates(base, space, count=3, seed=0)
    history, _ = search.successive_halving(first, dataset, rungs=[1], eta=2)
    record = _record_of(base, space, first, history)
    # The rerun draws one more candidate, and lists them in another order.
    rerun = list(reversed(search.sample_candidates(base, space, count=4, seed=0)))
    trained = []
    train_population = search.sweep.train_population

    def recording(configs, *args, **kwargs):
        trained.extend({k: c[k] for k in space} for c in configs)
        return train_population(configs, *args, **kwargs)

    monkeypatch.setattr(search.sweep, "train_population", recording)
    kept = search.recorded_scores(record, base, space, rerun)
    again, seconds = search.successive_halving(rerun, dataset, rungs=[1], eta=2, kept=kept)
    assert trained == [{k: rerun[0][k] for k in space}]  # Only the new fourth candidate.
    by_choice = {json.dumps({k: rerun[r["candidate"]][k] for k in space}): r for r in again[0]}
    for entry in history[0]:
        choice = json.dumps({k: first[entry["candidate"]][k] for k in space})
        assert by_choice[choice]["val_acc"] == entry["val_acc"]
        assert by_choice[choice]["curve"] == entry["curve"]
    assert seconds == pytest.approx(sum(r["seconds"] for r in again[0]))
    assert seconds > sum(r["seconds"] for r in history[0])


def test_recorded_scores_of_another_base_config_or_space_are_not_kept(synthetic_dir):
    base = tiny_config(synthetic_dir)
    space = {"lr": [1e-6, 0.5]}
    candidates = search.sample_candidates(base, space, count=2, seed=0)
    entry = {"candidate": 0, "epochs": 1, "val_acc": 0.5, "val_loss": 1.0, "curve": [0.5]}
    record = _record_of(base, space, candidates, [[entry]])
    kept = {(0, 1): {k: v for k, v in entry.items() if k != "candidate"}}
    assert search.recorded_scores(record, base, space, candidates) == kept
    elsewhere = ml_collections.ConfigDict(base.to_dict())
    elsewhere.data_dir = "/another/machine"  # Where the data lies does not change the scores.
    assert search.recorded_scores(record, elsewhere, space, candidates)
    separate = ml_collections.ConfigDict(base.to_dict())
    separate.share_data_order = False  # How a population runs: scores equal to rounding.
    assert search.recorded_scores(record, separate, space, candidates)
    other = ml_collections.ConfigDict(base.to_dict())
    other.dropout = 0.5
    assert search.recorded_scores(record, other, space, candidates) == {}
    assert search.recorded_scores(record, base, {"lr": [1e-6, 0.5, 1.0]}, candidates) == {}
    assert search.recorded_scores(None, base, space, candidates) == {}


@pytest.mark.parametrize(
    "grid, fragment",
    [
        # A value of another kind than its field was ml_collections' traceback.
        ({"num_hiddens": [8, "16"]}, "sweep key 'num_hiddens' has '16' among its values"),
        ({"seed": ["a"]}, "sweep key 'seed' has 'a' among its values; give values of the"),
        # One model counted twice: "2 seeds, ± 0.0000" in the report.
        ({"num_hiddens": [8, 8], "seed": [0]}, "sweep key 'num_hiddens' has a value twice"),
        ({"lr": [0.1] * 3, "seed": list(range(4000))}, "sweep key 'lr' has a value twice"),
        # Made whole before the first trains: a million took minutes and gigabytes.
        ({"lr": list(range(1, 101)), "seed": list(range(101))}, "10,100 points, more than"),
    ],
)
def test_a_grid_that_cannot_be_trained_as_given_is_one_line(synthetic_dir, grid, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)):
        search.expand_grid(tiny_config(synthetic_dir), grid)
