"""The studies end to end: their quick runs on the real data, the best-MLP study's final
runs as whole `make train` processes and the report built on them."""

import json
import shutil
import signal
import time

import pytest
from helpers import ROOT, assert_one_line_error, kill_mid_write, run_cli, start_cli, study

from experiments.studies.best import run as best
from experiments.studies.exercises import run as exercises
from experiments.studies.search import run as search_study
from mlp_jax import data, train
from mlp_jax.config import load_experiment


# The width grid runs through the command line (cli_test.py), with these checks.
@pytest.mark.parametrize("name", ["init"])
def test_quick_grid_runs_end_to_end(name, real_data_dir, tmp_path):
    exercise = study(f"exercises/{name}")
    exercise.train.data_dir = str(real_data_dir)
    rows = exercises.run_exercise(exercise, tmp_path / "results", tmp_path / "work", quick=True)
    assert len(rows) == len(exercise.quick_sweep[exercise.x])
    record = json.loads((tmp_path / "results" / f"{exercise.name}.json").read_text())
    assert record["quick"] and len(record["runs"]) == len(rows) * 2
    assert (tmp_path / "results" / f"{exercise.name}.png").stat().st_size > 10_000
    assert "| val acc |" in (tmp_path / "results" / f"{exercise.name}.md").read_text()
    # The test split is reported, never used to choose: each run carries it once.
    assert all("test_acc" in run and "test_acc" not in run["history"][-1] for run in record["runs"])


def test_quick_search_end_to_end_never_reads_the_test_split(tmp_path, real_data_dir, monkeypatch):
    read = data.read_idx_split

    def train_only(directory, split):
        assert split != "test", "the search read the test split"
        return read(directory, split)

    monkeypatch.setattr(data, "read_idx_split", train_only)
    joint = study("search/joint_search")
    joint.train.data_dir = str(real_data_dir)
    tuned = tmp_path / "mlp_tuned.py"
    record = search_study.run_search(
        joint, tmp_path / "results", tmp_path / "work", tuned, quick=True
    )
    assert [len(rung) for rung in record["history"]] == [4, 2]
    assert (tmp_path / "results" / "tune.png").stat().st_size > 5_000
    config = load_experiment(tuned)
    assert config.validation_size == 0 and config.num_epochs == joint.quick_final_epochs
    assert {k: config[k] for k in joint.quick_space} == record["winner"]


def test_tuned_experiment_trains_for_one_epoch(real_data_dir, tmp_path):
    config = study("search/mlp_tuned")
    config.num_epochs = 1
    config.data_dir = str(real_data_dir)
    result = train.train_and_evaluate(config, tmp_path)
    assert result.history[-1]["val_acc"] > 0.75


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
        return run_cli(
            "--stage=report", f"--results_dir={tmp_path}", module="experiments.studies.best.run"
        )

    missing = report()
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'finals.json'}: missing; "
        "`python -m experiments.studies.best.run --stage=finals` writes it"
    ]
    for text, problem in (
        ('{"runs": [', "not valid JSON"),
        # Edited by hand: a KeyError where the report first read it.
        ('{"runs": [{"seed": 0}]}', "the record lacks 'recipe'"),
    ):
        (tmp_path / "finals.json").write_text(text)
        broken = report()
        assert broken.returncode == 2 and "Traceback" not in broken.stderr
        (line,) = broken.stderr.strip().splitlines()
        assert line.startswith(f"error: {tmp_path / 'finals.json'}: {problem}")


def test_a_report_of_records_elsewhere_is_written_beside_them_not_above(tmp_path):
    # It went to the folder above --results_dir, over a user's own best.md there (trial 10).
    records = tmp_path / "records"
    shutil.copytree(ROOT / "results" / "best", records)
    (tmp_path / "best.md").write_text("the user's own")
    result = run_cli(
        "--stage=report", f"--results_dir={records}", module="experiments.studies.best.run"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "best.md").read_text() == "the user's own"
    assert "0.9160" in (records / "best.md").read_text() and (records / "best.png").is_file()
    assert not (tmp_path / "best.png").exists()


def test_a_bucket_for_the_best_studys_records_is_one_line_and_makes_no_folder():
    # It made the folder "gs:/bucket/best" in the clone, then said a record was missing.
    result = run_cli(
        "--stage=report", "--results_dir=gs://bucket/best", module="experiments.studies.best.run"
    )
    assert_one_line_error(result, "--results_dir=gs://bucket/best: this study keeps its")
    assert not (ROOT / "gs:").exists()


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


STOPPABLE_EXERCISE = """
import ml_collections
from mlp_jax.config import load_experiment


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "stoppable"
    config.question = "does a stopped population resume where it stopped?"
    config.train = load_experiment("experiments/mlp_concise.py")
    config.train.data_dir = {data_dir!r}
    config.train.num_hiddens = 64
    config.train.num_epochs = 8
    config.sweep = {{"lr": [0.05, 0.1], "seed": [0]}}
    config.quick_sweep = config.sweep
    config.quick_num_epochs = 8
    config.x = "lr"
    config.plot = "line"
    return config
"""


def test_ctrl_c_in_a_study_saves_the_population_and_the_rerun_resumes_it(
    synthetic_full_dir, tmp_path
):
    path = tmp_path / "stoppable.py"
    path.write_text(STOPPABLE_EXERCISE.format(data_dir=str(synthetic_full_dir)))
    args = [f"--config={path}", f"--results_dir={tmp_path / 'results'}"]
    work = tmp_path / "work"
    process = start_cli(*args, f"--workdir={work}", module="experiments.studies.exercises.run")
    deadline = time.monotonic() + 120
    while not list((work / "stoppable").glob("*.partial")):  # The population has started.
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # Before its first epoch ends: honoured after it.
    _, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert len(lines) == 1 and "stopped by SIGINT after epoch" in lines[0], stderr
    assert "of a population; it is saved in" in lines[0] and "Traceback" not in stderr
    stopped_at = int(lines[0].split("after epoch ")[1].split("/")[0])
    assert 1 <= stopped_at < 8
    assert not (tmp_path / "results" / "stoppable.json").exists()

    resumed = run_cli(*args, f"--workdir={work}", module="experiments.studies.exercises.run")
    assert resumed.returncode == 0, resumed.stderr
    assert not list((work / "stoppable").glob("*.partial"))  # Spent once its results are in.
    uninterrupted = run_cli(
        *args[:1],
        f"--results_dir={tmp_path / 'reference'}",
        f"--workdir={tmp_path / 'reference_work'}",
        module="experiments.studies.exercises.run",
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    def histories(folder):
        runs = json.loads((folder / "stoppable.json").read_text())["runs"]
        return [run["history"] for run in runs]

    assert histories(tmp_path / "results") == histories(tmp_path / "reference")
