"""The chapter's models written with Flax NNX (experiments/*_nnx.py): what they are made of,
and that mlp_jax trains them bit for bit as it trains the linen ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import small_dataset, tiny_config

from mlp_jax import loop, models, optim, steps

# (linen experiment, NNX experiment, the NNX parameter tree from the linen one's).
PAIRS = [
    ("mlp_scratch", "mlp_scratch_nnx", lambda p: dict(p)),
    (
        "mlp_concise",
        "mlp_concise_nnx",
        lambda p: {"hidden": {0: dict(p["Dense_0"])}, "out": dict(p["Dense_1"])},
    ),
]


def _params(config):
    model = models.resolve_model(config)
    return model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]


@pytest.mark.parametrize("name", ["mlp_scratch_nnx", "mlp_concise_nnx"])
def test_nnx_models_have_the_chapters_203530_parameters(name):
    params = _params(tiny_config("", name, num_hiddens=256))
    assert sum(x.size for x in jax.tree.leaves(params)) == 203_530


def test_the_nnx_scratch_model_is_made_as_d2l_makes_it():
    params = _params(tiny_config("", "mlp_scratch_nnx", num_hiddens=256))
    assert set(params) == {"W1", "b1", "W2", "b2"}
    assert float(jnp.std(params["W1"])) == pytest.approx(0.01, rel=0.02)
    assert not np.any(params["b1"]) and not np.any(params["b2"])


def test_the_nnx_concise_model_is_made_of_nnx_linear_layers():
    model = models.resolve_model(tiny_config("", "mlp_concise_nnx"))
    assert models.is_nnx(model.nnx_class)
    params = _params(tiny_config("", "mlp_concise_nnx"))
    assert params["hidden"][0]["kernel"].shape == (784, 32)
    assert params["out"]["kernel"].shape == (32, 10)


@pytest.mark.parametrize("linen_name, nnx_name, to_nnx", PAIRS, ids=["scratch", "concise"])
@pytest.mark.parametrize(
    "compute_dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.slow)]
)
def test_nnx_training_is_bit_identical_to_linen_from_the_same_parameters(
    linen_name, nnx_name, to_nnx, compute_dtype
):
    dataset = small_dataset(with_test=False)
    linen_config, nnx_config = (
        tiny_config("", name, num_epochs=2, momentum=0.9, compute_dtype=compute_dtype)
        for name in (linen_name, nnx_name)
    )
    steps_per_epoch = -(-len(dataset.train.labels) // linen_config.batch_size)
    tx = optim.make_optimizer(linen_config, steps_per_epoch)
    linen_state = steps.create_train_state(models.resolve_model(linen_config), tx, 0)
    nnx_state = steps.create_train_state(models.resolve_model(nnx_config), tx, 0)
    # Copies: the first fit donates the linen state's buffers.
    start = to_nnx(jax.tree.map(jnp.copy, linen_state.params))
    nnx_state = nnx_state.replace(params=jax.tree.map(jnp.copy, start))

    by_linen = loop.fit(linen_config, dataset, linen_state)
    by_nnx = loop.fit(nnx_config, dataset, nnx_state)
    for a, b in zip(
        jax.tree.leaves(to_nnx(by_linen.state.params)),
        jax.tree.leaves(by_nnx.state.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    assert [[r[k] for k in keys] for r in by_nnx.history] == [
        [r[k] for k in keys] for r in by_linen.history
    ]
    # And training moved the parameters (the comparison is not of two starting points).
    assert not np.array_equal(jax.tree.leaves(start)[0], jax.tree.leaves(by_nnx.state.params)[0])
