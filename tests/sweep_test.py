"""The vmap sweep engine and the exercises built on it."""

import functools
import json
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import (
    BEST_FEATURES,
    ROOT,
    TUNED_FEATURES,
    run_cli,
    synthetic_split,
    tiny_config,
    without_tensorflow_env,
)

from experiments import ex_init, ex_width
from mlp_jax import data, exercises, models, optim, steps, sweep


@pytest.fixture(scope="module")
def small_dataset():
    return data.Dataset(synthetic_split(2000, 0), synthetic_split(500, 1), synthetic_split(500, 2))


def _separate_run(config, dataset):
    """One model trained alone with the same pure functions, no vmap."""
    steps_per_epoch = optim.steps_per_epoch(len(dataset.train.labels), config.batch_size)
    tx = optim.make_optimizer(config, steps_per_epoch)
    state = steps.create_train_state(models.resolve_model(config), tx, config.seed)
    epoch = jax.jit(functools.partial(steps.train_epoch, **steps.epoch_options(config)))
    evaluate = jax.jit(
        functools.partial(
            steps.evaluate, batch_size=config.eval_batch_size, compute_dtype=config.compute_dtype
        )
    )
    history = []
    for _ in range(config.num_epochs):
        state, train_metrics = epoch(state, jax.device_put(dataset.train))
        val = evaluate(state, jax.device_put(dataset.validation)).compute()
        history.append(
            (float(train_metrics.compute()["loss"]), float(val["loss"]), float(val["accuracy"]))
        )
    return history


@pytest.mark.parametrize(
    "experiment, features",
    [
        ("mlp_scratch", {}),
        ("mlp_concise", TUNED_FEATURES),
        ("mlp_concise", {**TUNED_FEATURES, "compute_dtype": "bfloat16"}),
        ("mlp_concise", BEST_FEATURES),
    ],
    ids=["scratch_sgd", "concise_tuned_features", "concise_tuned_bfloat16", "concise_best"],
)
def test_population_equals_separate_runs(synthetic_dir, small_dataset, experiment, features):
    configs = [
        tiny_config(
            synthetic_dir,
            experiment=experiment,
            num_epochs=2,
            batch_size=128,
            **{**features, "seed": s, "lr": lr},
        )
        for s, lr in ((0, 0.1), (1, 0.1), (0, 0.5))
    ]
    configs[2].weight_init, configs[2].init_scale = "he", 0.0
    assert len(sweep.group_configs(configs)) == 1
    population = sweep.train_population(configs, small_dataset)
    for config, result in zip(configs, population, strict=True):
        alone = _separate_run(config, small_dataset)
        for record, (train_loss, val_loss, val_acc) in zip(result["history"], alone, strict=True):
            assert record["train_loss"] == pytest.approx(train_loss, rel=1e-6)
            assert record["val_loss"] == pytest.approx(val_loss, rel=1e-6)
            assert abs(record["val_acc"] - val_acc) <= 2 / 500
    # Different seeds and learning rates really gave different models.
    assert len({r["history"][-1]["train_loss"] for r in population}) == 3


def test_population_of_one_trains_exactly_as_its_own_run(synthetic_dir, small_dataset):
    # A search's candidate is a population of one: not vmapped, it is its own run, bit for bit.
    config = tiny_config(synthetic_dir, num_epochs=2, batch_size=128, **BEST_FEATURES)
    (result,) = sweep.train_population([config], small_dataset)
    history = [(r["train_loss"], r["val_loss"], r["val_acc"]) for r in result["history"]]
    assert history == _separate_run(config, small_dataset)


def test_shapes_form_separate_groups_and_keep_their_order(synthetic_dir, small_dataset):
    configs = [
        tiny_config(synthetic_dir, num_hiddens=h, seed=s, num_epochs=1)
        for h, s in ((8, 0), (16, 0), (8, 1))
    ]
    assert sweep.group_configs(configs) == [[0, 2], [1]]
    results = sweep.train_population(configs, small_dataset, max_population=1)
    assert [len(r["history"]) for r in results] == [1, 1, 1]
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in results)


def test_diverged_member_does_not_spoil_the_others(synthetic_dir, small_dataset):
    configs = [tiny_config(synthetic_dir, lr=lr, num_epochs=2) for lr in (0.1, 1e30)]
    good, bad = sweep.train_population(configs, small_dataset)
    (alone,) = sweep.train_population(configs[:1], small_dataset)
    for record, reference in zip(good["history"], alone["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_acc"):
            assert np.isfinite(record[key]) and record[key] == pytest.approx(reference[key], 1e-5)
    assert good["test_acc"] == pytest.approx(alone["test_acc"], abs=1e-6)
    assert not np.isfinite(bad["history"][-1]["train_loss"])


def test_named_variants_set_several_fields():
    train = ex_init.get_config().train
    members = exercises.expand_grid(train, {"init": ex_init.INITS[:2], "seed": [0, 1]})
    assert len(members) == 4
    label, config = members[2]
    assert label == {"init": "normal(1.0)", "seed": 0}
    assert (config.weight_init, config.init_scale) == ("normal", 1.0)


@pytest.mark.parametrize("module", [ex_width, ex_init])
def test_quick_grid_runs_end_to_end(module, real_data_dir, tmp_path):
    exercise = module.get_config()
    exercise.train.data_dir = str(real_data_dir)
    rows = exercises.run_exercise(exercise, tmp_path / "results", tmp_path / "work", quick=True)
    assert len(rows) == len(exercise.quick_sweep[exercise.x])
    record = json.loads((tmp_path / "results" / f"{exercise.name}.json").read_text())
    assert record["quick"] and len(record["runs"]) == len(rows) * 2
    assert (tmp_path / "results" / f"{exercise.name}.png").stat().st_size > 10_000
    assert "| val acc |" in (tmp_path / "results" / f"{exercise.name}.md").read_text()
    # The test split is reported, never used to choose: each run carries it once.
    assert all("test_acc" in run and "test_acc" not in run["history"][-1] for run in record["runs"])


def test_cached_populations_are_reused_with_their_seconds(
    synthetic_dir, small_dataset, tmp_path, capsys
):
    # A learning rate high enough that an earlier epoch beats the last (0.224 against 0.168).
    configs = [tiny_config(synthetic_dir, seed=s, num_epochs=4, lr=0.3) for s in (0, 1)]
    first = sweep.train_population(configs, small_dataset, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 1
    live = capsys.readouterr().out
    again = sweep.train_population(configs, small_dataset, cache_dir=tmp_path, progress=False)
    assert again == json.loads(json.dumps(first))
    assert all(r["train_seconds"] > 0 for r in again)
    # A rerun's progress line reports the best the live run showed (any epoch), not "nan".
    best = max(row["val_acc"] for r in first for row in r["history"])
    assert best > max(r["history"][-1]["val_acc"] for r in first)  # Else the check is blind.
    assert f"best val_acc so far {best:.4f}" in live
    assert f"cached; best val_acc so far {best:.4f}" in capsys.readouterr().out


def _run_multidevice_sweeps(synthetic_dir, out, sizes, env):
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "multidevice_sweeps.py"),
            str(synthetic_dir),
            str(out),
            sizes,
        ],
        cwd=ROOT,
        env=without_tensorflow_env(
            {**env, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT / "tests")}
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_same_results(results, reference, tolerance=1e-5):
    assert len(results) == len(reference)
    for member, expected in zip(results, reference, strict=True):
        for record, expected_record in zip(member["history"], expected["history"], strict=True):
            for key, value in expected_record.items():
                assert record[key] == pytest.approx(value, rel=tolerance, abs=tolerance), key
        for key in ("test_loss", "test_acc"):
            assert member[key] == pytest.approx(expected[key], rel=tolerance, abs=tolerance)


def test_population_spread_over_eight_devices_equals_one_device(synthetic_dir, tmp_path):
    out = tmp_path / "sweeps.json"
    process = _run_multidevice_sweeps(
        synthetic_dir, out, "8,10", {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    )
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    results = json.loads(out.read_text())
    for size in ("8", "10"):  # 10 models on 8 devices: padded to 16, 6 inert members dropped.
        assert results[size]["devices"] == 8
        assert len(results[size]["all"]) == int(size)
        _assert_same_results(results[size]["all"], results[size]["one"])
    # The members really differ, so equality above is member by member.
    assert len({m["history"][-1]["train_loss"] for m in results["10"]["all"]}) == 10


def test_population_over_two_processes_equals_one_process(synthetic_dir, tmp_path):
    from multidevice_sweeps import population, small_dataset

    out = tmp_path / "sweeps.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = [
        _run_multidevice_sweeps(
            synthetic_dir,
            out,
            "6",
            {
                "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=600) for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, (_, stderr) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    distributed = json.loads(out.read_text())["6"]
    assert distributed["devices"] == 4
    alone = sweep.train_group(population(str(synthetic_dir), 6), small_dataset())
    _assert_same_results(distributed["all"], alone)


def test_quick_exercise_on_four_devices_writes_the_same_numbers(real_data_dir, tmp_path):
    """`make exercises QUICK=1`'s width grid on 1 and on 4 devices; its output shows one
    progress line per population (it is not a terminal here)."""
    runs = {}
    for devices in (1, 4):
        result = run_cli(
            "--config=experiments/ex_width.py",
            "--quick",
            f"--results_dir={tmp_path / str(devices)}",
            f"--workdir={tmp_path / f'work{devices}'}",
            module="mlp_jax.exercises",
            env={
                "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                "JAX_PLATFORMS": "cpu",
            },
        )
        assert result.returncode == 0, result.stderr[-3000:]
        progress = [line for line in result.stdout.splitlines() if line.startswith("population ")]
        assert [line.split(" (")[0] for line in progress] == [
            f"population {i}/3" for i in (1, 2, 3)
        ]
        assert "2 models" in progress[0] and "best val_acc so far" in progress[0]
        runs[devices] = json.loads((tmp_path / str(devices) / "width.json").read_text())["runs"]
    for one, four in zip(runs[1], runs[4], strict=True):
        assert one["point"] == four["point"]
        for a, b in zip(one["history"], four["history"], strict=True):
            for key in ("train_loss", "val_loss", "val_acc"):
                assert a[key] == pytest.approx(b[key], abs=1e-4), key
