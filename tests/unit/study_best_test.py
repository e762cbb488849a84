"""The best-MLP study's ablation (experiments/studies/best) on small problems. (Its final
runs, whole `make train` processes, and the report built on them:
tests/integration/studies_test.py.)"""

import json

import pytest
from helpers import ROOT, synthetic_split, tiny_config

from benchmarks import report
from experiments.studies.best import run as best
from mlp_jax import data, files, sweep

RECIPE_FEATURES = {
    "augment_shift": 1,
    "augment_erase": 0.5,
    "mixup_alpha": 0.4,
    "ema_decay": 0.9,
    "dropout": 0.1,
    "optimizer": "adamw",
    "weight_decay": 0.05,
    "lr": 0.002,
}


def test_each_ablation_removes_exactly_one_ingredient_the_recipe_has(synthetic_dir):
    recipe = tiny_config(synthetic_dir, **RECIPE_FEATURES)
    removals = best.ablations(recipe)
    assert list(removals) == [
        "MixUp",
        "random erasing",
        "random shifts",
        "EMA of the weights",
        "dropout",
        "weight decay",
    ]  # No CutMix, label smoothing or cosine schedule: the recipe has none of them.
    reference = best.held_out_config(recipe, 5, 1000).to_dict()
    for change in removals.values():
        variant = best.held_out_config(recipe, 5, 1000, change).to_dict()
        assert {k for k in variant if variant[k] != reference[k]} == set(change)


@pytest.mark.slow
def test_ablation_trains_each_removal_and_resumes_from_its_cache(
    synthetic_dir, tmp_path, monkeypatch
):
    recipe = tiny_config(
        synthetic_dir,
        ema_decay=0.9,
        mixup_alpha=0.2,
        optimizer="adam",
        lr=0.003,
    )
    dataset = data.Dataset(synthetic_split(6000, 0), synthetic_split(1000, 1), None)
    record_path = tmp_path / "ablation.json"
    first = best.run_ablation(recipe, 3, dataset, tmp_path, record_path)
    assert json.loads(record_path.read_text()) == first
    assert {row["processor"] for row in first["rows"].values()} == {report.describe_processor()}
    assert first["recipe"] == best.recipe_fields(recipe)
    assert list(first["rows"]) == [
        "(none: the recipe)",
        "MixUp",
        "EMA of the weights",
    ]
    accuracies = [row["val_acc"] for row in first["rows"].values()]
    assert len(set(accuracies)) == len(accuracies) and all(0.3 < a < 0.95 for a in accuracies)
    (direct,) = sweep.train_population(
        [best.held_out_config(recipe, 3, 1000, best.INGREDIENTS["MixUp"])],
        dataset,
        evaluate_test=False,
    )
    assert first["rows"]["MixUp"]["val_acc"] == direct["history"][-1]["val_acc"]

    def no_training(*args, **kwargs):
        raise AssertionError("a cached ablation was trained again")

    monkeypatch.setattr(sweep, "train_group", no_training)
    assert best.run_ablation(recipe, 3, dataset, tmp_path) == first
    # Without the run cache (a fresh clone), the recorded rows are not trained again either.
    assert best.run_ablation(recipe, 3, dataset, tmp_path / "empty", record_path) == first
    monkeypatch.undo()
    # A row missing from the record is trained (and only it: the others are not re-measured).
    partial = json.loads(record_path.read_text())
    del partial["rows"]["(none: the recipe)"]
    partial["rows"]["EMA of the weights"]["val_acc"] = 0.5
    record_path.write_text(json.dumps(partial))
    resumed = best.run_ablation(recipe, 3, dataset, tmp_path / "empty", record_path)
    assert resumed["rows"]["EMA of the weights"]["val_acc"] == 0.5
    assert resumed["rows"]["(none: the recipe)"] == first["rows"]["(none: the recipe)"]
    assert list(resumed["rows"]) == list(first["rows"])
    assert json.loads(record_path.read_text()) == resumed
    # Rows recorded at another number of epochs are not this ablation's.
    shorter = best.run_ablation(recipe, 2, dataset, tmp_path, record_path)
    assert shorter["epochs"] == 2 and shorter["rows"]["EMA of the weights"]["val_acc"] != 0.5


@pytest.mark.slow
def test_ablation_keeps_the_rows_an_earlier_recipes_record_trained(
    synthetic_dir, tmp_path, monkeypatch
):
    dataset = data.Dataset(synthetic_split(6000, 0), synthetic_split(1000, 1), None)
    adam = {"ema_decay": 0.9, "optimizer": "adam", "lr": 0.003}
    record_path = tmp_path / "ablation.json"
    earlier = best.run_ablation(
        tiny_config(synthetic_dir, **adam), 3, dataset, tmp_path / "cache", record_path
    )
    # The next recipe adds MixUp: removing it gives the earlier recipe, already measured.
    recipe = tiny_config(synthetic_dir, mixup_alpha=0.2, **adam)
    trained = []
    train_population = sweep.train_population

    def recording(configs, *args, **kwargs):
        trained.extend((c.mixup_alpha, c.ema_decay) for c in configs)
        return train_population(configs, *args, **kwargs)

    monkeypatch.setattr(sweep, "train_population", recording)
    record = best.run_ablation(recipe, 3, dataset, tmp_path / "empty", record_path)
    assert record["recipe"] == best.recipe_fields(recipe)
    assert list(record["rows"]) == ["(none: the recipe)", "MixUp", "EMA of the weights"]
    assert trained == [(0.2, 0.9), (0.2, 0.0)]  # The recipe, and it without EMA.
    kept = earlier["rows"]["(none: the recipe)"]
    assert record["rows"]["MixUp"] == {**kept, "change": {"mixup_alpha": 0.0}}
    assert json.loads(record_path.read_text()) == record


def test_the_committed_records_are_of_the_shapes_the_report_reads():
    # The shapes refuse a record edited by hand; they must take every record the study wrote.
    results = ROOT / "results" / "best"
    assert files.read_record(results / "finals.json", best.FINALS_SHAPE)["runs"]
    assert files.read_record(results / "ablation.json", best.ABLATION_SHAPE)["rows"]
