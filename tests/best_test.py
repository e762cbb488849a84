"""The best-MLP benchmark's stages on small problems: ablation, final runs, report."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, kill_mid_write, synthetic_split, tiny_config

from benchmarks import best, ceiling
from mlp_jax import data, sweep

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
    assert {row["processor"] for row in first["rows"].values()} == {ceiling.describe_processor()}
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


@pytest.fixture(scope="module")
def finals(synthetic_dir, tmp_path_factory):
    """Seed 1 of the recipe through `make train`, made small (once for this module)."""
    tmp_path = tmp_path_factory.mktemp("best")
    extra = (
        "--config.num_epochs=2",
        "--config.num_hiddens=32",
        f"--config.data_dir={synthetic_dir}",
    )
    recipe = best.load_recipe()
    record = best.run_finals(recipe, tmp_path / "results", tmp_path / "runs", (1,), extra)
    return recipe, record, extra, tmp_path


def test_final_run_is_make_train_and_is_recorded_once(finals, monkeypatch):
    recipe, record, extra, tmp_path = finals
    (run,) = record["runs"]
    history = (tmp_path / "runs" / "mlp_best_seed1" / "metrics.jsonl").read_text().splitlines()
    assert run["test_acc"] == json.loads(history[-1])["val_acc"]
    assert run["wall_seconds"] > run["epoch_seconds"] > 0 and not run["resumed"]
    config = json.loads((tmp_path / "runs" / "mlp_best_seed1" / "config.json").read_text())
    assert config["ema_decay"] == recipe.ema_decay and config["num_hiddens"] == 32
    assert config["seed"] == run["seed"] == 1 and run["epochs"] == 2

    def no_training(*args):
        raise AssertionError("a recorded seed was trained again")

    monkeypatch.setattr(best, "train_final", no_training)
    again = best.run_finals(recipe, tmp_path / "results", tmp_path / "runs", (1,), extra)
    assert again == record


def test_a_kill_while_a_final_is_recorded_keeps_the_seeds_recorded_before(
    finals, tmp_path, monkeypatch
):
    recipe, record, extra, runs = finals
    results = tmp_path / "results"
    shutil.copytree(runs / "results", results)
    monkeypatch.setattr(
        best, "train_final", lambda seed, *args: {**record["runs"][0], "seed": seed}
    )
    kill_mid_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        best.run_finals(recipe, results, runs / "runs", (1, 2), extra)
    monkeypatch.undo()
    assert json.loads((results / "finals.json").read_text()) == record


def test_a_missing_or_broken_record_ends_the_report_with_one_line(tmp_path):
    def report():
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.best",
                "--stage=report",
                f"--results_dir={tmp_path}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )

    missing = report()
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'finals.json'}: missing; "
        "`python -m benchmarks.best --stage=finals` writes it"
    ]
    (tmp_path / "finals.json").write_text('{"runs": [')
    broken = report()
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    (line,) = broken.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'finals.json'}: not valid JSON")


def test_report_states_the_goal_and_each_removal(finals, tmp_path):
    recipe, record, _, _ = finals
    ablation = {
        "recipe": best.recipe_fields(recipe),
        "epochs": 36,
        "validation_size": 10_000,
        "rows": {
            "(none: the recipe)": {
                "change": {},
                "val_acc": 0.91,
                "val_loss": 0.3,
                "train_loss": 0.3,
            },
            "MixUp": {
                "change": {"mixup_alpha": 0.0},
                "val_acc": 0.905,
                "val_loss": 0.3,
                "train_loss": 0.2,
                "processor": "CPU B",
                "date": "2026-12-02",
            },
            "dropout": {
                "change": {"dropout": 0.0},
                "val_acc": 0.9,
                "val_loss": 0.3,
                "train_loss": 0.2,
                "processor": "CPU B",
                "date": "2026-12-02",
            },
        },
    }
    search = {
        "date": "2026-11-29",
        "candidates": [{"mixup_alpha": 0.1 * c} for c in range(9)],
        "history": [
            [{"candidate": c, "epochs": 12, "val_acc": 0.8} for c in range(9)],
            [
                {"candidate": c, "epochs": 36, "val_acc": a}
                for c, a in ((2, 0.9), (0, 0.89), (5, 0.85))
            ],
        ],
        "seconds": 600.0,
        "winner": {"mixup_alpha": 0.2},
    }
    text = best.markdown(recipe, record, ablation, search)
    assert "| MixUp | mixup_alpha=0.0 | 0.9050 | -0.0050 |" in text
    # A resumed ablation's rows may come from several machines; each is named (a row from
    # before rows recorded theirs says so).
    assert (
        "Measured: (none: the recipe) on a processor not recorded (date not recorded); "
        "MixUp, dropout on CPU B (2026-12-02)." in text
    )
    assert "Goal 0.915: not met" in text  # Two tiny epochs cannot reach it.
    assert "9 candidates, successive halving 9 for 12 -> 3 for 36 epochs" in text
    assert "| 0.2 | 0.9000 |\n| 0.0 | 0.8900 |\n| 0.5 | 0.8500 |" in text
    curve = [0.85, 0.91, 0.9]
    last = [{"candidate": c, "epochs": 3, "val_acc": 0.9, "curve": curve} for c in range(6)]
    one_rung = {**search, "candidates": search["candidates"][:6], "history": [last]}
    text = best.markdown(recipe, record, ablation, one_rung)
    assert "6 candidates, each trained for 3 epochs," in text
    assert "| mixup_alpha | val acc | best epoch's |" in text and "| 0.9000 | 0.9100 (2) |" in text
    best.plot(record["runs"], ablation, tmp_path / "best.png")
    assert (tmp_path / "best.png").stat().st_size > 10_000


def test_an_ablation_of_another_recipe_is_not_reported(finals, tmp_path):
    recipe, record, _, _ = finals
    path = tmp_path / "ablation.json"
    assert best.recorded_ablation(recipe, path) is None
    ours = {"recipe": best.recipe_fields(recipe), "epochs": 3, "validation_size": 10, "rows": {}}
    path.write_text(json.dumps(ours))
    assert best.recorded_ablation(recipe, path) == ours
    path.write_text(json.dumps({**ours, "recipe": {**ours["recipe"], "dropout": 0.3}}))
    assert best.recorded_ablation(recipe, path) is None
    search = {
        "date": "2026-12-01",
        "candidates": [{"augment_shift": 1 + c % 2} for c in range(5)],
        "history": [[{"candidate": c, "epochs": 100, "val_acc": 0.9} for c in range(5)]],
        "seconds": 5 * 1080.0,
        "winner": {},
    }
    text = best.markdown(recipe, record, None, search)
    removals = list(best.ablations(recipe))
    assert f"the {len(removals)} removals not yet measured for this recipe" in text
    assert f"({', '.join(removals)}) for 100 epochs each, about {len(removals) * 18} min" in text
    assert "| removed |" not in text
    # An interrupted ablation: the rows it measured, and the rest still to run.
    row = {"change": {}, "val_acc": 0.91, "val_loss": 0.3, "train_loss": 0.2}
    first = {**ours, "rows": {"(none: the recipe)": row, removals[0]: {**row, "val_acc": 0.9}}}
    text = best.markdown(recipe, record, first, search)
    assert f"| {removals[0]} |  | 0.9000 | -0.0100 |" in text
    assert f"the {len(removals) - 1} removals not yet measured for this recipe" in text
    assert f"({', '.join(removals[1:])}) for 100 epochs" in text
    best.plot(record["runs"], None, tmp_path / "best.png")
    assert (tmp_path / "best.png").stat().st_size > 10_000
