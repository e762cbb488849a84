"""The vmap sweep engine on small synthetic data: populations equal separate runs, groups by
shape, a diverged member, the cache. (Several devices and processes, and the exercises on the
real data: tests/integration/multidevice_sweep_test.py and studies_test.py; a population of one
equal bit for bit to its own run: compiled_as_users_test.py.)"""

import functools
import json
import os
import signal
import types

import jax
import numpy as np
import pytest
from helpers import BEST_FEATURES, TUNED_FEATURES, count_traces, small_dataset, tiny_config

from mlp_jax import loop, signals, sweep
from mlp_jax.config import EpochOptions
from mlp_jax.errors import UserError


@pytest.fixture(scope="module")
def dataset():
    return small_dataset()


def _separate_run(config, dataset):
    """One model trained alone by the run loop, no vmap: per epoch (train loss, val loss,
    val acc)."""
    history = loop.fit(config, dataset).history
    return [(r["train_loss"], r["val_loss"], r["val_acc"]) for r in history]


def _assert_each_member_equals_its_separate_run(configs, population, dataset):
    """Each member's per-epoch losses those of its own run, to float rounding (and its
    accuracy within two of the 500 validation images)."""
    for config, result in zip(configs, population, strict=True):
        alone = _separate_run(config, dataset)
        for record, (train_loss, val_loss, val_acc) in zip(result["history"], alone, strict=True):
            assert record["train_loss"] == pytest.approx(train_loss, rel=1e-6)
            assert record["val_loss"] == pytest.approx(val_loss, rel=1e-6)
            assert abs(record["val_acc"] - val_acc) <= 2 / 500


@pytest.mark.parametrize(
    "experiment, features",
    [
        ("mlp_scratch", {}),
        pytest.param("mlp_scratch_nnx", {}, marks=pytest.mark.slow),
        pytest.param("mlp_concise", TUNED_FEATURES, marks=pytest.mark.slow),
        pytest.param("mlp_concise_nnx", TUNED_FEATURES, marks=pytest.mark.slow),
        pytest.param(
            "mlp_concise", {**TUNED_FEATURES, "compute_dtype": "bfloat16"}, marks=pytest.mark.slow
        ),
        pytest.param("mlp_concise", BEST_FEATURES, marks=pytest.mark.slow),
    ],
    ids=[
        "scratch_sgd",
        "scratch_nnx_sgd",
        "concise_tuned_features",
        "concise_nnx_tuned_features",
        "concise_tuned_bfloat16",
        "concise_best",
    ],
)
def test_population_equals_separate_runs(synthetic_dir, dataset, experiment, features):
    configs = [
        tiny_config(
            synthetic_dir,
            experiment,
            num_epochs=2,
            batch_size=128,
            **{**features, "seed": s, "lr": lr},
        )
        for s, lr in ((0, 0.1), (1, 0.1), (0, 0.5))
    ]
    configs[2].weight_init, configs[2].init_scale = "he", 0.0
    assert len(sweep.group_configs(configs)) == 1
    population = sweep.train_population(configs, dataset)
    _assert_each_member_equals_its_separate_run(configs, population, dataset)
    # Different seeds and learning rates really gave different models.
    assert len({r["history"][-1]["train_loss"] for r in population}) == 3


def _one_seed_population(synthetic_dir, **features):
    """Three models of one seed (so one data order) that differ in lr and initialiser."""
    configs = [
        tiny_config(synthetic_dir, num_epochs=2, batch_size=128, **{**features, "lr": lr})
        for lr in (0.1, 0.3, 0.05)
    ]
    configs[2].weight_init, configs[2].init_scale = "he", 0.0
    return configs


@pytest.mark.parametrize(
    "features",  # The fast tier checks the shared batch in the program (the test below).
    [
        pytest.param({}, marks=pytest.mark.slow),
        pytest.param({**TUNED_FEATURES, "mixup_alpha": 0.4}, marks=pytest.mark.slow),
    ],
    ids=["plain", "tuned_mixup"],
)
def test_population_of_one_seed_shares_its_batches_and_equals_separate_runs(
    synthetic_dir, dataset, features
):
    configs = _one_seed_population(synthetic_dir, **features)
    assert sweep.shares_order(configs)
    population = sweep.train_population(configs, dataset)
    _assert_each_member_equals_its_separate_run(configs, population, dataset)
    assert len({r["history"][-1]["train_loss"] for r in population}) == 3


@pytest.mark.parametrize("share", [True, False])
def test_a_shared_order_gathers_each_batch_once_for_every_member(synthetic_dir, dataset, share):
    configs = _one_seed_population(synthetic_dir, share_data_order=share)
    options = EpochOptions.from_config(configs[0])
    programs, _ = sweep._compiled_population_fns(options, 2000, False, sweep.shares_order(configs))
    state = sweep.stack_states(configs, len(dataset.train.labels))
    program = str(jax.make_jaxpr(programs(1))(state, dataset.train, dataset.validation))
    # The batch of pixels: one (128, 784) for all three members, or one per member.
    assert ("u8[3,128,784]" not in program) == share
    assert ("u8[128,784]" in program) == share


def test_a_population_traces_its_epoch_once(synthetic_dir, dataset, monkeypatch):
    # The population's programs made afresh for this test (an earlier one's are cached).
    fresh = functools.cache(sweep._compiled_population_fns.__wrapped__)
    monkeypatch.setattr(sweep, "_compiled_population_fns", fresh)
    traced = count_traces(monkeypatch)
    configs = [tiny_config(synthetic_dir, seed=s, num_epochs=3) for s in (0, 1)]
    sweep.train_population(configs, dataset, evaluate_test=False, progress=False)
    assert len(traced) == 1


def test_shapes_form_separate_groups_and_keep_their_order(synthetic_dir, dataset):
    configs = [
        tiny_config(synthetic_dir, num_hiddens=h, seed=s, num_epochs=1)
        for h, s in ((8, 0), (16, 0), (8, 1))
    ]
    assert sweep.group_configs(configs) == [[0, 2], [1]]
    results = sweep.train_population(configs, dataset, max_population=1)
    assert [len(r["history"]) for r in results] == [1, 1, 1]
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in results)


@pytest.mark.parametrize(
    "epochs, max_population, problem",
    [(0, 64, "num_epochs=0: each member"), (1, 0, "max_population=0 is invalid")],
)
def test_a_population_that_cannot_train_is_one_line_before_it_trains(
    synthetic_dir, dataset, tmp_path, epochs, max_population, problem
):
    # No epochs: trained, cached, then an IndexError where the results were summarized; no
    # models a program: range()'s ValueError.
    configs = [tiny_config(synthetic_dir, seed=s, num_epochs=epochs) for s in (0, 1)]
    with pytest.raises(UserError, match=problem):
        sweep.train_population(configs, dataset, max_population=max_population, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_population_given_no_list_of_configs_or_a_bad_dataset_is_refused(synthetic_dir, dataset):
    # One ConfigDict iterated as its keys: "'str' object has no attribute 'num_epochs'".
    config = tiny_config(synthetic_dir)
    with pytest.raises(TypeError, match=r"give a list of experiment configs, \[config\] for one"):
        sweep.train_population(config, dataset)
    no_test = dataset._replace(test=None)
    with pytest.raises(TypeError, match="dataset.test is a NoneType"):
        sweep.train_population([config], no_test)


def test_diverged_member_does_not_spoil_the_others(synthetic_dir, dataset):
    configs = [tiny_config(synthetic_dir, lr=lr, num_epochs=2) for lr in (0.1, 1e30)]
    good, bad = sweep.train_population(configs, dataset)
    (alone,) = sweep.train_population(configs[:1], dataset)
    for record, reference in zip(good["history"], alone["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_acc"):
            assert np.isfinite(record[key]) and record[key] == pytest.approx(reference[key], 1e-5)
    assert good["test_acc"] == pytest.approx(alone["test_acc"], abs=1e-6)
    assert not np.isfinite(bad["history"][-1]["train_loss"])


def test_cached_populations_are_reused_with_their_seconds(synthetic_dir, dataset, tmp_path, capsys):
    # A learning rate high enough that an earlier epoch beats the last (asserted below).
    configs = [tiny_config(synthetic_dir, seed=s, num_epochs=4, lr=0.3) for s in (0, 1)]
    first = sweep.train_population(configs, dataset, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 1
    live = capsys.readouterr().out
    again = sweep.train_population(configs, dataset, cache_dir=tmp_path, progress=False)
    assert again == json.loads(json.dumps(first))
    assert all(r["train_seconds"] > 0 for r in again)
    # A rerun's progress line reports the best the live run showed (any epoch), not "nan".
    best = max(row["val_acc"] for r in first for row in r["history"])
    assert best > max(r["history"][-1]["val_acc"] for r in first)  # Else the check is blind.
    assert f"best val_acc so far {best:.4f}" in live
    assert f"cached; best val_acc so far {best:.4f}" in capsys.readouterr().out


_RESULT = '{"history": [%s], "train_seconds": 1.5}'
_EPOCH = '{"train_loss": 1, "val_loss": 1, "val_acc": %s}'


@pytest.mark.parametrize(
    "cached, problem",
    [
        ("[]", "not the results of this population"),
        ("[{}, {}]", r"record\[0\] lacks 'history'"),
        ("[1, 2]", r"record\[0\] is a number, not an object"),
        # Read back by a search as the last epoch's: IndexError and KeyError tracebacks.
        (f"[{_RESULT % ''}, {_RESULT % ''}]", "not the results of this population"),
        (f"[{_RESULT % (_EPOCH % 0.5)}, {_RESULT % (_EPOCH % 'null')}]", r"\['val_acc'\] is null"),
    ],
)
def test_a_cached_result_of_another_shape_is_one_line_and_kept(
    synthetic_dir, dataset, tmp_path, cached, problem
):
    # Each was a zip or key traceback where the results were first read.
    configs = [tiny_config(synthetic_dir, seed=s) for s in (0, 1)]
    (tmp_path / f"{sweep._digest(configs, True)}.json").write_text(cached)
    with pytest.raises(UserError, match=f"{problem}.* delete it"):
        sweep.train_population(configs, dataset, cache_dir=tmp_path, progress=False)
    assert [p.read_text() for p in tmp_path.glob("*.json")] == [cached]


def test_a_cache_folder_without_room_is_refused_before_the_population_trains(
    synthetic_dir, dataset, tmp_path, monkeypatch
):
    # A study's cache on a full disk was found full once its first population had trained
    # and its results were written (trial 10).
    real = os.statvfs(tmp_path)
    fields = {name: getattr(real, name) for name in dir(real) if name.startswith("f_")}
    full = types.SimpleNamespace(**{**fields, "f_bavail": 0})
    monkeypatch.setattr(os, "statvfs", lambda _: full)
    trained = []
    monkeypatch.setattr(loop, "epochs", lambda *a, **k: trained.append(1) or iter(()))
    with pytest.raises(UserError, match=r"cache/.*partial/checkpoints: the file system holding it"):
        sweep.train_population([tiny_config(synthetic_dir)], dataset, cache_dir=tmp_path / "cache")
    assert not trained


def test_a_signal_in_a_populations_last_epoch_stops_the_sweep_after_caching_it(
    synthetic_dir, dataset, tmp_path, monkeypatch
):
    # SIGTERM arrived while the last epoch ran: nothing is left to save mid-population, but
    # the sweep (a search's rung, say) must not go on as if none had come.
    monkeypatch.setattr(signals.StopRequests, "agreed_signal", lambda self: signal.SIGTERM)
    configs = [tiny_config(synthetic_dir, num_epochs=1, seed=seed) for seed in (0, 1)]
    with pytest.raises(signals.Interrupted, match="after population 1/1; .* cached in") as e:
        sweep.train_population(configs, dataset, cache_dir=tmp_path)
    assert e.value.exit_code == 128 + signal.SIGTERM
    assert len(list(tmp_path.glob("*.json"))) == 1  # Its results are kept for the rerun.
