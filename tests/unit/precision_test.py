"""Mixed precision (config.compute_dtype="bfloat16"): bfloat16 products, float32 everything
the optimiser and the loss see, honoured by training, evaluation, populations and resumption."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import synthetic_split, tiny_config, train_step

from mlp_jax import models, steps, train
from mlp_jax.config import EpochOptions
from mlp_jax.errors import UserError


def _dot_operand_dtypes(fn, *args) -> set[str]:
    """The dtypes of every operand of every matrix product in `fn`'s program."""
    jaxpr = jax.make_jaxpr(fn)(*args)
    found = set()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.update(str(v.aval.dtype) for v in eqn.invars)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    return found


@pytest.mark.parametrize("experiment", ["mlp_scratch", "mlp_concise"])
def test_bfloat16_logits_are_close_to_float32_logits(synthetic_dir, experiment):
    config = tiny_config(synthetic_dir, experiment, weight_init="lecun")
    model = models.resolve_model(config)
    state = steps.create_train_state(model, optax.sgd(0.1), 0)
    images = synthetic_split(64, 3).images
    full = steps.model_logits(state.apply_fn, state.params, images, "float32")
    low = steps.model_logits(state.apply_fn, state.params, images, "bfloat16")
    assert low.dtype == jnp.float32  # The softmax and the loss get float32.
    scale = float(jnp.abs(full).max())
    assert float(jnp.abs(low - full).max()) <= 0.02 * scale
    assert not np.array_equal(low, full)  # bfloat16 really was used.
    assert _dot_operand_dtypes(
        lambda p: steps.model_logits(state.apply_fn, p, images, "bfloat16"), state.params
    ) == {"bfloat16"}
    assert _dot_operand_dtypes(
        lambda p: steps.model_logits(state.apply_fn, p, images, "float32"), state.params
    ) == {"float32"}


def test_bfloat16_products_accumulate_in_float32():
    # 4096 products of 1 x 1: a bfloat16 accumulator (8 significant bits) stops at 256.
    def apply_fn(variables, x_BxD):
        return x_BxD @ variables["params"]["w"]

    images = jnp.full((1, 4096), 255, jnp.uint8)
    params = {"w": jnp.ones((4096, 1), jnp.float32)}
    assert float(steps.model_logits(apply_fn, params, images, "bfloat16")[0, 0]) == 4096.0


def test_parameters_and_optimizer_state_stay_float32(synthetic_dir):
    config = tiny_config(synthetic_dir, compute_dtype="bfloat16")
    state = steps.create_train_state(models.resolve_model(config), optax.adamw(1e-2), 0)
    before = state.params
    options = EpochOptions.from_config(config)
    epoch = jax.jit(lambda s, d: steps.train_epoch(s, d, options=options))
    state, _ = epoch(state, jax.device_put(synthetic_split(512, 0)))
    floats = [x for x in jax.tree.leaves((state.params, state.opt_state)) if x.dtype != jnp.int32]
    assert floats and {str(x.dtype) for x in floats} == {"float32"}
    # The float32 parameters moved by updates smaller than bfloat16 could represent.
    changes = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.abs(a - b).max(), state.params, before))
    assert all(float(c) > 0 for c in changes)


@pytest.mark.slow
def test_bfloat16_run_resumes_bit_for_bit_and_evaluates_in_bfloat16(synthetic_dir, tmp_path):
    def config(epochs):
        return tiny_config(synthetic_dir, num_epochs=epochs, compute_dtype="bfloat16")

    reference = train.train_and_evaluate(config(2), tmp_path / "uninterrupted")
    train.train_and_evaluate(config(1), tmp_path / "resumed")
    resumed = train.train_and_evaluate(config(2), tmp_path / "resumed")
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(reference.state), strict=True):
        np.testing.assert_array_equal(a, b)
    # Evaluation of the workdir repeats the run's own (bfloat16) validation on the test split.
    evaluated = train.evaluate_workdir(tmp_path / "resumed")
    assert evaluated["test_loss"] == resumed.history[-1]["val_loss"]
    full = train.train_and_evaluate(tiny_config(synthetic_dir, num_epochs=2), tmp_path / "float32")
    assert full.history[-1]["val_loss"] != reference.history[-1]["val_loss"]


def test_compute_dtype_is_validated(synthetic_dir):

    with pytest.raises(UserError, match=r"config.compute_dtype='float16' is invalid"):
        models.resolve_model(tiny_config(synthetic_dir, compute_dtype="float16"))


def _float32_only():
    """An optimiser stage that fails at trace time unless the gradients it gets are float32."""

    def update(updates, state, params=None):
        dtypes = {str(u.dtype) for u in jax.tree.leaves(updates)}
        assert dtypes == {"float32"}, f"the optimiser got {dtypes} gradients"
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_the_optimizer_gets_the_float32_gradient_of_the_loss(synthetic_dir, compute_dtype):
    # Whatever the products' dtype, the optimiser gets float32 gradients, and they are the
    # loss's own gradient: in float32 every bit of it (rounded to bfloat16, 8 significant
    # bits, it would be off by about 0.1 %), in bfloat16 what the casts pass back.
    config = tiny_config(synthetic_dir, compute_dtype=compute_dtype)
    tx = optax.chain(_float32_only(), optax.sgd(1.0))
    state = steps.create_train_state(models.resolve_model(config), tx, 0)
    data = synthetic_split(256, 4)
    batch = {"images": data.images, "labels": data.labels, "weights": jnp.ones(256)}
    options = EpochOptions(compute_dtype=compute_dtype)
    new, _ = train_step(state, batch, jax.random.key(0), options=options)

    def loss(params):
        logits = steps.model_logits(state.apply_fn, params, batch["images"], compute_dtype)
        return steps.cross_entropy(logits, batch["labels"]).mean()

    expected = jax.jit(jax.grad(loss))(state.params)
    applied = jax.tree.map(lambda before, after: before - after, state.params, new.params)
    for a, b in zip(jax.tree.leaves(applied), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
