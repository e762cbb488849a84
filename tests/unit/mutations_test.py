"""The net under the bugs an independent mutation audit (2026-12-05) saw pass the suite: one
test per bug, each named by it, each seen failing with its bug put in. All small: a step, an
epoch of a few examples, a schedule, a stub population."""

import functools
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from helpers import experiment, small_dataset, synthetic_split, tiny_config, train_step

from mlp_jax import checkpointing, loop, models, optim, predict, search, steps, sweep
from mlp_jax.config import EpochOptions, base_config

mlp_scratch = experiment("mlp_scratch")


def _state(tx, seed=0, num_hiddens=16):
    return steps.create_train_state(mlp_scratch.MLPScratch(num_hiddens=num_hiddens), tx, seed)


def test_augmentation_draws_afresh_at_every_step_not_once_per_batch_position():
    # Every example is the same image, one batch an epoch, and no learning (lr 0): two epochs
    # (steps 0 and 1) see the same images in the same places, so their losses differ only if
    # the augmentation key is folded with the step.
    image = synthetic_split(1, seed=0)
    data = jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x), 64, axis=0), image)
    frozen = _state(optax.sgd(0.0))

    def two_epochs(options):
        epoch = jax.jit(functools.partial(steps.train_epoch, options=options))
        state, first = epoch(frozen, data)
        _, second = epoch(state, data)
        return float(first.compute()["loss"]), float(second.compute()["loss"])

    plain = two_epochs(EpochOptions(batch_size=64))
    assert plain[0] == plain[1]  # Nothing else differs between the two steps.
    shifted = two_epochs(EpochOptions(batch_size=64, augment_shift=3, augment_flip=True))
    assert shifted[0] != shifted[1]


def test_warm_up_is_counted_in_epochs():
    config = base_config()
    config.warmup_epochs, config.num_epochs = 1, 3
    tx = optim.make_optimizer(config, steps_per_epoch=10)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    applied = []
    for _ in range(6):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        applied.append(float(-updates["w"]))
    # Linear warm-up over 10 steps: step k at k/10 of the peak (0.1).
    np.testing.assert_allclose(applied, [0.1 * k / 10 for k in range(6)], rtol=1e-6)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_takes_its_b1_from_config_momentum(name):
    config = base_config()
    config.optimizer, config.momentum, config.lr = name, 0.5, 0.01
    tx = optim.make_optimizer(config, steps_per_epoch=1)
    reference = (
        optax.adamw(0.01, b1=0.5, weight_decay=0.0) if name == "adamw" else optax.adam(0.01, b1=0.5)
    )
    params = {"w": jnp.ones(3)}
    ours, theirs = tx.init(params), reference.init(params)
    for gradient in ([1.0, -2.0, 0.5], [0.3, 0.1, -1.0], [-0.2, 0.4, 0.9]):
        g = {"w": jnp.asarray(gradient)}
        a, ours = tx.update(g, ours, params)
        b, theirs = reference.update(g, theirs, params)
        np.testing.assert_allclose(a["w"], b["w"], rtol=1e-6)


def test_predict_and_export_use_the_moving_average_of_the_parameters():
    config = tiny_config("", num_hiddens=16, ema_decay=0.9)
    model = mlp_scratch.MLPScratch(num_hiddens=16)
    state = steps.create_train_state(model, optim.make_optimizer(config, 1), 0)
    # The raw parameters zeroed give every class 0.1; the average (the initial ones) does not.
    state = state.replace(params=jax.tree.map(jnp.zeros_like, state.params))
    restored = checkpointing.Restored(model, state, config)
    pixels = synthetic_split(8, seed=1).images
    probabilities = np.asarray(predict.probabilities_fn(restored)(pixels))
    assert not np.allclose(probabilities, 0.1)
    expected = steps.model_logits(model.apply, steps.evaluation_params(state), pixels)
    np.testing.assert_allclose(probabilities, jax.nn.softmax(expected), rtol=1e-5)


def test_the_epochs_of_a_program_share_its_seconds(monkeypatch):
    # A clock that moves one second at each reading: a program of two epochs lasts one
    # second (between the two readings around it), so each of its epochs is given a half.
    ticks = iter(range(10**6))
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    config = tiny_config("", num_hiddens=16, num_epochs=4, epochs_per_program=2)
    result = loop.fit(config, small_dataset(with_test=False))
    assert [r["train_seconds"] for r in result.history] == [0.5] * 4


def test_halving_keeps_the_best_candidates_whatever_their_order(monkeypatch):
    accuracy = {0.01: 0.5, 0.02: 0.6, 0.03: 0.9, 0.04: 0.8}  # The best are listed last.

    def stub_population(configs, dataset, **kwargs):
        return [
            {
                "history": [{"val_acc": accuracy[c.lr], "val_loss": 1.0, "train_loss": 1.0}],
                "train_seconds": 0.0,
            }
            for c in configs
        ]

    monkeypatch.setattr(sweep, "train_population", stub_population)
    candidates = []
    for lr in accuracy:
        candidate = base_config()
        candidate.lr = lr
        candidates.append(candidate)
    history, _ = search.successive_halving(candidates, None, rungs=[1, 2], eta=2)
    assert [r["candidate"] for r in history[0]] == [2, 3, 1, 0]  # Ranked best first.
    assert sorted(r["candidate"] for r in history[1]) == [2, 3]  # The best half went on.


def test_gradients_are_summed_across_devices_not_averaged():
    # One batch split into two shards on a named axis (as pmap and shard_map split it over
    # two devices): the step must give exactly the unsplit batch's update.
    data = synthetic_split(8, seed=2)
    batch = {
        "images": jnp.asarray(data.images),
        "labels": jnp.asarray(data.labels),
        "weights": jnp.ones(8),
    }
    state = _state(optax.sgd(0.5))
    whole, _ = train_step(state, batch, jax.random.key(0))
    shards = jax.tree.map(lambda x: x.reshape(2, 4, *x.shape[1:]), batch)
    split = jax.jit(
        jax.vmap(
            functools.partial(steps.train_step, axis_name="devices"),
            in_axes=(None, 0, None),
            axis_name="devices",
        )
    )(state, shards, jax.random.key(0))[0]
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(split.params), strict=True):
        np.testing.assert_allclose(b[0], a, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b[1], a, rtol=1e-5, atol=1e-7)


def test_evaluation_computes_in_the_compute_dtype():
    data = jax.tree.map(jnp.asarray, synthetic_split(256, seed=3))
    state = _state(optax.sgd(0.1), num_hiddens=64)
    evaluate = jax.jit(steps.evaluate, static_argnames=("batch_size", "compute_dtype"))
    in_float32 = evaluate(state, data, batch_size=128, compute_dtype="float32").compute()["loss"]
    in_bfloat16 = evaluate(state, data, batch_size=128, compute_dtype="bfloat16").compute()["loss"]
    assert in_float32 != in_bfloat16  # bfloat16 operands round the products.
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), state.params)
    logits = state.apply_fn({"params": params}, (data.images / 255).astype(jnp.bfloat16))
    by_hand = steps.cross_entropy(logits.astype(jnp.float32), data.labels).mean()
    np.testing.assert_allclose(in_bfloat16, by_hand, rtol=1e-6)


NNX_KEYWORD_ONLY = """
from flax import nnx


class Model(nnx.Module):
    def __init__(self, *, width: int = 8, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(784, width, rngs=rngs)
        self.out = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x, train=False):
        return self.out(nnx.relu(self.hidden(x)))
"""


def test_an_nnx_models_keyword_only_arguments_are_config_fields(tmp_path):
    path = tmp_path / "keyword_only.py"
    path.write_text(NNX_KEYWORD_ONLY)
    config = ml_collections.ConfigDict({**base_config().to_dict(), "width": 24})
    config.model = f"{path}:Model"
    model = models.resolve_model(config)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 784)))["params"]
    kernels = [leaf.shape for leaf in jax.tree.leaves(params) if len(leaf.shape) == 2]
    assert (784, 24) in kernels  # The config's width, not the default 8.
