"""Equalities of two programs that hold as users compile them (XLA's default optimisation),
not under the unit tier's --quick-compile, where each program is compiled without optimising
and the two differ by an ulp: in-process, in the full tier, which compiles as users do."""

import os

from helpers import BEST_FEATURES, QUICK_COMPILE_XLA_FLAGS, small_dataset, tiny_config

from mlp_jax import loop, sweep


def test_population_of_one_trains_exactly_as_its_own_run(synthetic_dir):
    assert QUICK_COMPILE_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""), (
        "run without --quick-compile: this equality holds as users compile"
    )
    # A search's candidate is a population of one: not vmapped, it is its own run, bit for bit.
    dataset = small_dataset()
    config = tiny_config(synthetic_dir, num_epochs=2, batch_size=128, **BEST_FEATURES)
    (result,) = sweep.train_population([config], dataset)
    alone = loop.fit(config, dataset).history
    keys = ("train_loss", "val_loss", "val_acc")
    assert [[r[k] for k in keys] for r in result["history"]] == [
        [r[k] for k in keys] for r in alone
    ]
