"""The joint search study (experiments/studies/search) on small problems: its figure, the
experiment file it writes, its record, and the best-MLP search that reuses it."""

import json
import runpy

import pytest
from helpers import ROOT, study

from experiments.studies.search import run as search_study
from mlp_jax import config as config_lib
from mlp_jax import models, search
from mlp_jax.errors import UserError

# A search's record with its candidates and its history left to fill in.
_RECORD = '{"space": {}, "seconds": 1, "date": "", "candidates": %s, "history": %s}'
_ENTRY = '[[{"epochs": 1, "val_acc": %s, "candidate": %d}]]'


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"history": [[{"val_acc": 0.9', "not valid JSON"),
        ('{"space": {}, "candidates": [], "seconds": 1, "date": ""}', "lacks 'history'"),
        (_RECORD % ("[{}]", "[]"), "no rungs"),
        (_RECORD % ("[{}]", "[[]]"), "a rung of no candidates"),
        (_RECORD % ("[{}]", _ENTRY % ("0.5", 1)), "outside its 1 candidates"),
        (_RECORD % ("[{}]", _ENTRY % ('"high"', 0)), r"\['val_acc'\] is a string"),
        (_RECORD % ("[{}]", '[[{"epochs": 1, "val_acc": 0.5}]]'), "lacks 'candidate'"),
    ],
)
def test_a_broken_search_record_is_a_user_error_before_anything_trains(
    tmp_path, synthetic_dir, monkeypatch, text, problem
):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before reading the record")

    monkeypatch.setattr(search.sweep, "train_population", no_training)
    joint = study("search/joint_search")
    joint.train.data_dir, joint.train.validation_size = str(synthetic_dir), 1_000
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "tune.json").write_text(text)
    with pytest.raises(UserError, match=f"tune.json: .*{problem}"):
        search_study.run_search(
            joint, tmp_path / "results", tmp_path / "work", tmp_path / "t.py", True
        )


def test_the_committed_search_records_are_read_as_records():
    # results/tune.json predates the base config kept in each record: it is read, and not
    # reused (see recorded_scores), not refused.
    for path in ("results/tune.json", "results/best/tune.json"):
        assert search.read_record(ROOT / path)["history"]


@pytest.mark.slow
def test_quick_search_of_the_scratch_model_writes_a_file_the_validation_accepts(
    tmp_path, synthetic_dir
):
    # The written file names its model and every field of it, whichever model the search
    # started from (it once built every winner on the concise MLP).
    joint = study("search/joint_search")
    joint.train = config_lib.load_experiment(ROOT / "experiments" / "mlp_scratch.py")
    joint.train.data_dir, joint.train.validation_size = str(synthetic_dir), 1_000
    joint.quick_space = {"num_hiddens": [16, 32], "lr": [0.05, 0.1]}
    tuned = tmp_path / "mlp_tuned_scratch.py"
    record = search_study.run_search(
        joint, tmp_path / "results", tmp_path / "work", tuned, quick=True
    )
    written = config_lib.load_experiment(tuned)
    assert written.model == "experiments/mlp_scratch.py:MLPScratch"
    assert type(models.resolve_model(written)).__name__ == "MLPScratch"
    assert {k: written[k] for k in joint.quick_space} == record["winner"]
    assert "from experiments" not in tuned.read_text()


def test_tune_plot_labels_the_rung_budgets_plainly():
    history = [
        [{"candidate": c, "epochs": epochs, "val_acc": 0.8 + 0.01 * c} for c in range(n)]
        for epochs, n in ((2, 9), (6, 3), (18, 1))
    ]
    (ax,) = search_study.figure(history).axes
    assert [label.get_text() for label in ax.get_xticklabels()] == ["2", "6", "18"]
    assert not [label.get_text() for label in ax.get_xticklabels(minor=True) if label.get_text()]


def test_tune_plot_draws_each_candidates_curve_and_names_few_candidates():
    curves = {0: [0.80, 0.85, 0.84], 1: [0.70, 0.86, 0.88]}
    history = [
        [{"candidate": c, "epochs": 3, "val_acc": curve[-1], "curve": curve}]
        for c, curve in curves.items()
    ]
    history = [history[0] + history[1]]
    (ax,) = search_study.figure(history, {0: "shift=1", 1: "shift=2"}).axes
    drawn = [list(line.get_ydata()) for line in ax.get_lines() if len(line.get_ydata()) > 1]
    assert drawn == list(curves.values())
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["shift=1", "shift=2"]
    many = [[{**history[0][0], "candidate": c} for c in range(9)]]
    assert search_study.figure(many, {c: str(c) for c in range(9)}).axes[0].get_legend() is None


def test_written_winner_keeps_what_its_base_config_set(tmp_path):
    best = study("best/best_search")
    winner = search.sample_candidates(best.train, best.space.to_dict(), 1, seed=0)[0]
    winner.num_epochs = best.final_epochs
    winner.data_dir = "/somewhere/on/this/machine"
    path = tmp_path / "mlp_best.py"
    search_study.write_tuned_config(path, winner, best.title, "A note.")
    written = config_lib.load_experiment(path)
    expected = {**winner.to_dict(), "validation_size": 0, "data_dir": ""}
    assert written.to_dict() == expected  # ema_decay, lr, depth: not only the drawn fields.
    assert path.read_text().startswith(f'"""{best.title}')
    search_study.check_tuned_config(path)  # One a search wrote may be replaced by the next.


def test_a_winner_titled_with_quotes_and_backslashes_is_valid_python(tmp_path):
    # Put into the file as it was, such a title made it invalid Python, status 0.
    best = study("best/best_search")
    winner = search.sample_candidates(best.train, best.space.to_dict(), 1, seed=0)[0]
    title = 'The """best""" MLP \\ ever, "quoted"'
    path = tmp_path / 'tuned "one".py'
    search_study.write_tuned_config(path, winner, title, 'A note ending in a quote"')
    written = runpy.run_path(str(path))
    assert written["__doc__"].startswith(f"{title}\n\n  make train CONFIG={path}\n")
    assert written["__doc__"].endswith('A note ending in a quote"\n')
    assert config_lib.load_experiment(path).lr == winner.lr


def test_a_tuned_config_that_names_a_users_file_is_refused_before_anything_trains(
    tmp_path, synthetic_dir, monkeypatch
):
    # The winner silently replaced it (experiments/mlp_scratch.py, say, and with it every
    # workdir that file trained).
    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking --tuned_config")

    monkeypatch.setattr(search.sweep, "train_population", no_training)
    joint = study("search/joint_search")
    joint.train.data_dir, joint.train.validation_size = str(synthetic_dir), 1_000
    users = tmp_path / "mine.py"
    users.write_text((ROOT / "experiments" / "mlp_scratch.py").read_text())
    with pytest.raises(UserError, match="mine.py: an experiment file no search wrote"):
        search_study.run_search(joint, tmp_path / "results", tmp_path / "work", users, True)
    assert users.read_text() == (ROOT / "experiments" / "mlp_scratch.py").read_text()


def test_best_search_keeps_its_record_and_trains_only_what_it_added():
    best = study("best/best_search")
    space = best.space.to_dict()
    candidates = search.draw_candidates(best, quick=False)
    choices = [{k: c[k] for k in space} for c in candidates]
    assert best.dropped[0] not in choices
    first_five = search.sample_candidates(best.train, space, 5, best.seed)
    assert choices[:5] == [{k: c[k] for k in space} for c in first_five]
    record = json.loads((ROOT / "results" / "best" / "tune.json").read_text())
    kept = search.recorded_scores(record, best.train, space, candidates)
    recorded = [i for i, c in enumerate(choices) if c in record["candidates"]]
    assert len(recorded) >= 5
    assert sorted(i for i, _ in kept) == recorded, "a fresh clone would train them again"
    assert all(epochs == best.rungs[-1] for _, epochs in kept)


def test_the_recipes_the_searches_wrote_are_what_they_trained():
    # experiments/studies/*/mlp_*.py were rewritten (2026-12-03) in the form the study now
    # writes; the configs are those the searches chose and the finals trained.
    tuned = study("search/mlp_tuned")
    assert (tuned.num_layers, tuned.num_hiddens, tuned.activation, tuned.lr) == (
        3,
        1024,
        "gelu",
        2e-3,
    )
    best = study("best/mlp_best")
    record = json.loads((ROOT / "results" / "best" / "finals.json").read_text())
    concise = config_lib.load_experiment(ROOT / "experiments" / "mlp_concise.py")
    differing = {k: v for k, v in best.to_dict().items() if concise.get(k) != v}
    assert differing == record["recipe"]
