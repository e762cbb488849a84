"""The search machinery on a tiny problem, and the tuned config."""

import json

import ml_collections
import pytest
from conftest import ROOT, synthetic_split, tiny_config

from experiments import best_search, tune_search
from mlp_jax import data, train, tune
from mlp_jax.config import load_experiment
from mlp_jax.errors import UserError


@pytest.fixture(scope="module")
def small_dataset():
    return data.Dataset(synthetic_split(2000, 0), synthetic_split(500, 1), None)


def test_halving_keeps_the_best_candidates_without_a_test_split(synthetic_dir, small_dataset):
    base = tiny_config(synthetic_dir)
    space = {"lr": [1e-6, 0.5], "num_hiddens": [16, 32]}
    candidates = tune.sample_candidates(base, space, count=4, seed=0)
    assert len({json.dumps(c.to_dict(), sort_keys=True) for c in candidates}) == 4
    history, seconds = tune.successive_halving(candidates, small_dataset, rungs=[1, 2], eta=2)
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
        tune.sample_candidates(tiny_config(synthetic_dir), {"lr": [0.1, 0.2]}, count=3, seed=0)


def test_quick_search_end_to_end_never_reads_the_test_split(tmp_path, real_data_dir, monkeypatch):
    read = data.read_idx_split

    def train_only(directory, split):
        assert split != "test", "the search read the test split"
        return read(directory, split)

    monkeypatch.setattr(data, "read_idx_split", train_only)
    search = tune_search.get_config()
    search.train.data_dir = str(real_data_dir)
    tuned = tmp_path / "mlp_tuned.py"
    record = tune.run_search(search, tmp_path / "results", tmp_path / "work", tuned, quick=True)
    assert [len(rung) for rung in record["history"]] == [4, 2]
    assert (tmp_path / "results" / "tune.png").stat().st_size > 5_000
    config = load_experiment(tuned)
    assert config.validation_size == 0 and config.num_epochs == search.quick_final_epochs
    assert {k: config[k] for k in search.quick_space} == record["winner"]


def test_a_broken_search_record_is_a_user_error_before_anything_trains(
    tmp_path, real_data_dir, monkeypatch
):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before reading the record")

    monkeypatch.setattr(tune.sweep, "train_population", no_training)
    search = tune_search.get_config()
    search.train.data_dir = str(real_data_dir)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "tune.json").write_text('{"history": [[{"val_acc": 0.9')
    with pytest.raises(UserError, match="tune.json: not valid JSON"):
        tune.run_search(search, tmp_path / "results", tmp_path / "work", tmp_path / "t.py", True)


def test_tuned_experiment_trains_for_one_epoch(real_data_dir, tmp_path):
    config = load_experiment(ROOT / "experiments" / "mlp_tuned.py")
    config.num_epochs = 1
    config.data_dir = str(real_data_dir)
    result = train.train_and_evaluate(config, tmp_path)
    assert result.history[-1]["val_acc"] > 0.75


def test_tune_plot_labels_the_rung_budgets_plainly():
    history = [
        [{"candidate": c, "epochs": epochs, "val_acc": 0.8 + 0.01 * c} for c in range(n)]
        for epochs, n in ((2, 9), (6, 3), (18, 1))
    ]
    (ax,) = tune.figure(history).axes
    assert [label.get_text() for label in ax.get_xticklabels()] == ["2", "6", "18"]
    assert not [label.get_text() for label in ax.get_xticklabels(minor=True) if label.get_text()]


def test_tune_plot_draws_each_candidates_curve_and_names_few_candidates():
    curves = {0: [0.80, 0.85, 0.84], 1: [0.70, 0.86, 0.88]}
    history = [
        [{"candidate": c, "epochs": 3, "val_acc": curve[-1], "curve": curve}]
        for c, curve in curves.items()
    ]
    history = [history[0] + history[1]]
    (ax,) = tune.figure(history, {0: "shift=1", 1: "shift=2"}).axes
    drawn = [list(line.get_ydata()) for line in ax.get_lines() if len(line.get_ydata()) > 1]
    assert drawn == list(curves.values())
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["shift=1", "shift=2"]
    many = [[{**history[0][0], "candidate": c} for c in range(9)]]
    assert tune.figure(many, {c: str(c) for c in range(9)}).axes[0].get_legend() is None


def test_written_winner_keeps_what_its_base_config_set(tmp_path):
    search = best_search.get_config()
    winner = tune.sample_candidates(search.train, search.space.to_dict(), 1, seed=0)[0]
    winner.num_epochs = search.final_epochs
    winner.data_dir = "/somewhere/on/this/machine"
    path = tmp_path / "mlp_best.py"
    tune.write_tuned_config(path, winner, search.title, "A note.")
    written = load_experiment(path)
    expected = {**winner.to_dict(), "validation_size": 0, "data_dir": ""}
    assert written.to_dict() == expected  # ema_decay, lr, depth: not only the drawn fields.
    assert path.read_text().startswith(f'r"""{search.title}')


def _record_of(base, space, candidates, history):
    """What run_search writes, reduced to what `recorded_scores` reads."""
    return {
        "train": tune._searched_config(base),
        "space": space,
        "candidates": [{k: c[k] for k in space} for c in candidates],
        "history": json.loads(json.dumps(history)),
    }


def test_a_rerun_keeps_recorded_scores_and_trains_only_the_rest(
    synthetic_dir, small_dataset, monkeypatch
):
    base = tiny_config(synthetic_dir)
    space = {"lr": [1e-6, 0.5], "num_hiddens": [16, 32]}
    first = tune.sample_candidates(base, space, count=3, seed=0)
    history, _ = tune.successive_halving(first, small_dataset, rungs=[1], eta=2)
    record = _record_of(base, space, first, history)
    # The rerun draws one more candidate, and lists them in another order.
    rerun = list(reversed(tune.sample_candidates(base, space, count=4, seed=0)))
    trained = []
    train_population = tune.sweep.train_population

    def recording(configs, *args, **kwargs):
        trained.extend({k: c[k] for k in space} for c in configs)
        return train_population(configs, *args, **kwargs)

    monkeypatch.setattr(tune.sweep, "train_population", recording)
    kept = tune.recorded_scores(record, base, space, rerun)
    again, seconds = tune.successive_halving(rerun, small_dataset, rungs=[1], eta=2, kept=kept)
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
    candidates = tune.sample_candidates(base, space, count=2, seed=0)
    entry = {"candidate": 0, "epochs": 1, "val_acc": 0.5, "val_loss": 1.0, "curve": [0.5]}
    record = _record_of(base, space, candidates, [[entry]])
    kept = {(0, 1): {k: v for k, v in entry.items() if k != "candidate"}}
    assert tune.recorded_scores(record, base, space, candidates) == kept
    elsewhere = ml_collections.ConfigDict(base.to_dict())
    elsewhere.data_dir = "/another/machine"  # Where the data lies does not change the scores.
    assert tune.recorded_scores(record, elsewhere, space, candidates)
    other = ml_collections.ConfigDict(base.to_dict())
    other.dropout = 0.5
    assert tune.recorded_scores(record, other, space, candidates) == {}
    assert tune.recorded_scores(record, base, {"lr": [1e-6, 0.5, 1.0]}, candidates) == {}
    assert tune.recorded_scores(None, base, space, candidates) == {}


def test_best_search_keeps_its_record_and_trains_only_what_it_added():
    search = best_search.get_config()
    space = search.space.to_dict()
    candidates = tune.draw_candidates(search, quick=False)
    choices = [{k: c[k] for k in space} for c in candidates]
    assert search.dropped[0] not in choices
    first_five = tune.sample_candidates(search.train, space, 5, search.seed)
    assert choices[:5] == [{k: c[k] for k in space} for c in first_five]
    record = json.loads((ROOT / "results" / "best" / "tune.json").read_text())
    kept = tune.recorded_scores(record, search.train, space, candidates)
    recorded = [i for i, c in enumerate(choices) if c in record["candidates"]]
    assert len(recorded) >= 5
    assert sorted(i for i, _ in kept) == recorded, "a fresh clone would train them again"
    assert all(epochs == search.rungs[-1] for _, epochs in kept)
