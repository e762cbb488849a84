"""The pure core: compiled epoch vs step by step, padding, exact evaluation, optimisers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import experiment, synthetic_split, train_step

from mlp_jax import augment, optim, steps
from mlp_jax.config import EpochOptions

mlp_scratch, mlp_concise = experiment("mlp_scratch"), experiment("mlp_concise")


def _state(model=None, lr=0.1, seed=0):
    model = model or mlp_scratch.MLPScratch(num_hiddens=32)
    return steps.create_train_state(model, optax.sgd(lr), seed)


def _as_device(split):
    return jax.tree.map(jnp.asarray, split)


def test_batch_layout_pads_with_zero_weights():
    indices, weights = steps.batch_layout(jnp.arange(10), 4)
    assert indices.shape == weights.shape == (3, 4)
    np.testing.assert_array_equal(weights.sum(axis=1), [4, 4, 2])
    np.testing.assert_array_equal(indices[2], [8, 9, 0, 0])


def test_compiled_epoch_equals_the_same_steps_run_one_by_one():
    data = _as_device(synthetic_split(1000, seed=0))  # 1000 = 7 x 128 + 104: a partial batch
    state = _state()
    epoch_state, epoch_metrics = jax.jit(
        functools.partial(steps.train_epoch, options=EpochOptions(batch_size=128))
    )(state, data)

    root = jax.random.wrap_key_data(state.rng)
    order = jax.random.permutation(
        jax.random.fold_in(jax.random.fold_in(root, steps.DATA_STREAM), 0), 1000
    )
    indices, weights = steps.batch_layout(order, 128)
    step = jax.jit(steps.train_step)
    loss_sum, correct = 0.0, 0.0
    for idx, w in zip(indices, weights, strict=True):
        batch = {"images": data.images[idx], "labels": data.labels[idx], "weights": w}
        state, m = step(state, batch, jax.random.key(0))
        loss_sum += float(m.loss.total)
        correct += float(m.accuracy.total)

    for a, b in zip(
        jax.tree.leaves(epoch_state.params), jax.tree.leaves(state.params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(epoch_state.step) == 8 and int(epoch_state.epoch) == 1
    computed = epoch_metrics.compute()
    assert int(epoch_metrics.loss.count) == 1000
    np.testing.assert_allclose(computed["loss"], loss_sum / 1000, rtol=1e-5)
    np.testing.assert_allclose(computed["accuracy"], correct / 1000, rtol=1e-6)


@pytest.mark.parametrize("model_class", [mlp_scratch.MLPScratch, mlp_concise.MLP])
def test_chapter_epoch_equals_an_independent_plain_sgd_loop(model_class):
    # Parity with d2l's loop, as a regression test: given the same initial parameters and
    # example order, the compiled epoch is a plain optax.sgd Python loop over minibatches of
    # 256 (the last one smaller), each step the mean loss of its examples.
    split = synthetic_split(1000, seed=0)  # 3 batches of 256 and one of 232.
    model = model_class()
    state = _state(model)
    trained, _ = jax.jit(
        functools.partial(steps.train_epoch, options=EpochOptions(batch_size=256))
    )(state, _as_device(split))

    root = jax.random.wrap_key_data(state.rng)
    epoch_key = jax.random.fold_in(jax.random.fold_in(root, steps.DATA_STREAM), 0)
    order = np.asarray(jax.random.permutation(epoch_key, 1000))
    tx = optax.sgd(0.1)
    params, opt_state = state.params, tx.init(state.params)

    def loss(params, images, labels):
        logits = model.apply({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit  # One program per batch size, not each operation compiled on its own.
    def step(params, opt_state, images, labels):
        grads = jax.grad(loss)(params, images, labels)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    for start in range(0, 1000, 256):
        idx = order[start : start + 256]
        images = jnp.asarray(split.images[idx], jnp.float32) / 255
        params, opt_state = step(params, opt_state, images, jnp.asarray(split.labels[idx]))

    for a, b in zip(jax.tree.leaves(trained.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_padded_last_batch_gives_the_unpadded_gradient():
    data = synthetic_split(256, seed=1)
    state = _state()
    real = 96
    padded = {
        "images": jnp.asarray(data.images),
        "labels": jnp.asarray(data.labels),
        "weights": jnp.concatenate([jnp.ones(real), jnp.zeros(256 - real)]),
    }
    unpadded = {k: v[:real] for k, v in padded.items()}
    after_padded, m_padded = train_step(state, padded, jax.random.key(0))
    after_unpadded, m_unpadded = train_step(state, unpadded, jax.random.key(0))
    for a, b in zip(
        jax.tree.leaves(after_padded.params), jax.tree.leaves(after_unpadded.params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(m_padded.loss.count) == real
    np.testing.assert_allclose(m_padded.compute()["loss"], m_unpadded.compute()["loss"], rtol=1e-6)


def test_epoch_order_is_a_fresh_permutation_every_epoch():
    data = _as_device(synthetic_split(512, seed=2))
    epoch = jax.jit(functools.partial(steps.train_epoch, options=EpochOptions(batch_size=512)))
    state = _state(lr=0.0)
    # With lr 0 the parameters stay put; a full-batch epoch then sees the same loss in any
    # order, but the step counter and epoch advance and the key stream changes.
    s1, m1 = epoch(state, data)
    s2, m2 = epoch(s1, data)
    assert int(s2.epoch) == 2 and int(s2.step) == 2
    np.testing.assert_allclose(m1.compute()["loss"], m2.compute()["loss"], rtol=1e-6)
    root = jax.random.wrap_key_data(state.rng)
    orders = [
        jax.random.permutation(
            jax.random.fold_in(jax.random.fold_in(root, steps.DATA_STREAM), e), 512
        )
        for e in (0, 1)
    ]
    assert not np.array_equal(orders[0], orders[1])
    assert sorted(np.asarray(orders[0]).tolist()) == list(range(512))


def test_evaluate_is_exact_over_uneven_chunks():
    data = _as_device(synthetic_split(1000, seed=3))
    state = _state(model=mlp_concise.MLP(num_hiddens=16))
    result = jax.jit(functools.partial(steps.evaluate, batch_size=300))(state, data).compute()
    logits = state.apply_fn({"params": state.params}, steps.scale_images(data.images))
    expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, data.labels).mean()
    expected_acc = (logits.argmax(-1) == data.labels).mean()
    np.testing.assert_allclose(result["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], expected_acc, rtol=1e-6)


def test_an_evaluation_chunk_longer_than_the_split_allocates_only_the_split():
    data = _as_device(synthetic_split(100, seed=3))
    state = _state(model=mlp_concise.MLP(num_hiddens=16))
    # 2e9 padded slots of 784 pixels would be terabytes: out of memory, had they been made.
    huge = jax.jit(functools.partial(steps.evaluate, batch_size=2_000_000_000))(state, data)
    exact = jax.jit(functools.partial(steps.evaluate, batch_size=100))(state, data)
    assert huge.compute() == exact.compute()


def test_dropout_uses_the_step_key():
    data = _as_device(synthetic_split(256, seed=4))
    model = mlp_concise.MLP(num_hiddens=32, dropout=0.5)
    state = _state(model=model)
    batch = {"images": data.images, "labels": data.labels, "weights": jnp.ones(256)}
    a, _ = train_step(state, batch, jax.random.key(1))
    b, _ = train_step(state, batch, jax.random.key(1))
    c, _ = train_step(state, batch, jax.random.key(2))
    np.testing.assert_array_equal(a.params["Dense_0"]["kernel"], b.params["Dense_0"]["kernel"])
    assert not np.array_equal(a.params["Dense_0"]["kernel"], c.params["Dense_0"]["kernel"])


def test_sgd_config_is_exactly_optax_sgd():
    config = mlp_scratch.get_config()
    ours = _state(lr=0.1).replace(tx=optim.make_optimizer(config, 235))
    ours = ours.replace(opt_state=ours.tx.init(ours.params))
    reference = _state(lr=0.1)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.37), reference.params)
    a = ours.apply_gradients(grads=grads).params
    b = reference.apply_gradients(grads=grads).params
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_equal_configs_get_the_same_optimizer_whatever_they_hold():
    # The same object, so that jit's caches serve a second run (loop_test); a study's config
    # may hold a list of dicts, which a frozen ConfigDict refuses.
    config = mlp_concise.get_config()
    config.rungs = [{"epochs": 2}]
    tx = optim.make_optimizer(config, 10)
    assert optim.make_optimizer(config.copy_and_resolve_references(), 10) is tx
    config.lr = 0.2
    assert optim.make_optimizer(config, 10) is not tx


@pytest.mark.parametrize("name", ["momentum", "adam", "adamw"])
def test_other_optimizers_and_schedules_step(name):
    config = mlp_concise.get_config()
    config.optimizer, config.lr, config.schedule, config.warmup_epochs = name, 1e-3, "cosine", 1
    config.weight_decay = 1e-4
    tx = optim.make_optimizer(config, 10)
    state = steps.create_train_state(mlp_concise.MLP(num_hiddens=8), tx, 0)
    grads = jax.tree.map(jnp.ones_like, state.params)
    apply = jax.jit(lambda state: state.apply_gradients(grads=grads))
    new = apply(state)
    # The first warm-up step has learning rate 0; the second moves the parameters.
    assert all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params), strict=True)
    )
    newer = apply(new)
    assert not any(
        np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(newer.params), jax.tree.leaves(state.params), strict=True)
    )


def test_augment_shifts_and_flips_each_image_independently():
    images = np.zeros((64, 28, 28), np.uint8)
    images[:, 10:18, 4:8] = 255  # A bar left of centre.
    flat = jnp.asarray(images.reshape(64, 784))
    out = np.asarray(
        augment.shift_and_flip(flat, jax.random.key(0), max_shift=2, flip=True)
    ).reshape(64, 28, 28)
    assert out.dtype == np.uint8
    assert all(int(o.sum()) == int(images[0].sum()) for o in out)  # A 2-pixel shift loses nothing.
    columns = {int(np.argmax(o.sum(axis=0) > 0)) for o in out}
    assert any(c < 14 for c in columns) and any(c >= 14 for c in columns)  # Flipped and not.
    assert len({o.tobytes() for o in out}) > 10
    same = augment.shift_and_flip(flat, jax.random.key(0), max_shift=2, flip=True)
    np.testing.assert_array_equal(np.asarray(same).reshape(64, 28, 28), out)


@pytest.mark.parametrize(
    "options",
    [
        {"augment_shift": 2, "augment_flip": True},
        {"augment_erase": 0.5},
        {"augment_rotate": 10.0, "augment_scale": 0.1, "augment_elastic": 34.0},
        pytest.param({"mixup_alpha": 0.4}, marks=pytest.mark.slow),
        pytest.param({"cutmix_alpha": 1.0}, marks=pytest.mark.slow),
        {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
    ],
    ids=["shift_flip", "erase", "distort", "mixup", "cutmix", "mixup_or_cutmix"],
)
def test_augmented_epoch_differs_from_plain_and_repeats_itself(options):
    data = _as_device(synthetic_split(512, seed=5))
    plain = jax.jit(functools.partial(steps.train_epoch, options=EpochOptions(batch_size=128)))
    augmented = jax.jit(
        functools.partial(steps.train_epoch, options=EpochOptions(batch_size=128, **options))
    )
    a, _ = plain(_state(), data)
    b, _ = augmented(_state(), data)
    c, _ = augmented(_state(), data)
    assert not np.array_equal(a.params["W1"], b.params["W1"])
    np.testing.assert_array_equal(b.params["W1"], c.params["W1"])


@pytest.mark.parametrize(
    "alphas",
    [(0.4, 0.0), pytest.param((0.0, 1.0), marks=pytest.mark.slow)],
    ids=["mixup", "cutmix"],
)
def test_mixing_step_trains_on_mixed_images_against_mixed_targets(alphas):
    mixup_alpha, cutmix_alpha = alphas
    data = synthetic_split(128, seed=7)
    batch = {"images": data.images, "labels": data.labels, "weights": jnp.ones(128)}
    state, rng = _state(mlp_concise.MLP(num_hiddens=32)), jax.random.key(5)
    options = {"label_smoothing": 0.1, "mixup_alpha": mixup_alpha, "cutmix_alpha": cutmix_alpha}
    step = functools.partial(steps.train_step, options=EpochOptions(**options))
    _, metrics = jax.jit(step)(state, batch, rng)
    images, targets = steps.mix(
        batch["images"], batch["labels"], jax.random.fold_in(rng, steps.MIX_STREAM), **options
    )
    logits = steps.model_logits(state.apply_fn, state.params, images)
    expected = optax.softmax_cross_entropy(logits, targets).sum()
    np.testing.assert_allclose(metrics.loss.total, expected, rtol=1e-5)
    assert not np.allclose(targets.max(axis=1), 0.91)  # Mixed, not only smoothed.


def test_moving_average_of_the_parameters_is_what_evaluation_uses():
    data = _as_device(synthetic_split(512, seed=6))
    config = mlp_scratch.get_config()
    config.ema_decay = 0.9
    tx = optim.make_optimizer(config, steps_per_epoch=4)
    state = steps.create_train_state(mlp_scratch.MLPScratch(num_hiddens=32), tx, 0)
    ema = state.params
    step = jax.jit(steps.train_step)
    indices, weights = steps.batch_layout(jnp.arange(512), 128)
    for idx, w in zip(indices, weights, strict=True):
        batch = {"images": data.images[idx], "labels": data.labels[idx], "weights": w}
        state, _ = step(state, batch, jax.random.key(0))
        ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, state.params)
    for a, b in zip(
        jax.tree.leaves(steps.evaluation_params(state)), jax.tree.leaves(ema), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    evaluate = jax.jit(functools.partial(steps.evaluate, batch_size=128))
    averaged = evaluate(state, data).compute()
    plain_state = steps.create_train_state(
        mlp_scratch.MLPScratch(num_hiddens=32), optax.sgd(0.1), 0
    ).replace(params=ema)
    np.testing.assert_allclose(averaged["loss"], evaluate(plain_state, data).compute()["loss"])
    trained = evaluate(state.replace(opt_state=optax.sgd(0.1).init(state.params)), data)
    assert float(trained.compute()["loss"]) != float(averaged["loss"])


def test_each_epoch_trains_on_a_new_order():
    """Same parameters, same seed, the next epoch number: another order of the examples, so
    other parameters after the epoch. (A shuffle that ignored the epoch would repeat one.)"""
    data = _as_device(synthetic_split(1000, seed=0))
    epoch = jax.jit(functools.partial(steps.train_epoch, options=EpochOptions(batch_size=128)))
    state = _state()
    first, _ = epoch(state, data)
    second, _ = epoch(state.replace(epoch=state.epoch + 1), data)
    again, _ = epoch(state, data)
    difference = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params), strict=True)
    )
    assert difference > 1e-4
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(a, b)  # And the same epoch number repeats exactly.


@pytest.mark.parametrize("first_step", [0, 8])  # 8: an epoch after the first's 8 steps.
def test_dropout_draws_a_new_key_at_every_step_of_an_epoch(first_step):
    # The compiled epoch derives each step's dropout key from (seed, step); run one by one
    # with those keys, the steps give the epoch's parameters, and one key for every step
    # does not (a mask repeated at every step is another, worse, training).
    data = _as_device(synthetic_split(1000, seed=0))
    state = _state(model=mlp_concise.MLP(num_hiddens=32, dropout=0.5))
    state = state.replace(step=jnp.asarray(first_step, jnp.int32))
    trained, _ = jax.jit(
        functools.partial(steps.train_epoch, options=EpochOptions(batch_size=128))
    )(state, data)

    root = jax.random.wrap_key_data(state.rng)
    order = jax.random.permutation(
        jax.random.fold_in(jax.random.fold_in(root, steps.DATA_STREAM), 0), 1000
    )
    dropout_key = jax.random.fold_in(root, steps.DROPOUT_STREAM)
    step = jax.jit(steps.train_step)

    def by_hand(key_of_step):
        current = state
        for idx, w in zip(*steps.batch_layout(order, 128), strict=True):
            batch = {"images": data.images[idx], "labels": data.labels[idx], "weights": w}
            current, _ = step(current, batch, key_of_step(int(current.step)))
        return current.params

    fresh = by_hand(lambda i: jax.random.fold_in(dropout_key, i))
    for a, b in zip(jax.tree.leaves(trained.params), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    repeated = by_hand(lambda i: jax.random.fold_in(dropout_key, 0))
    assert not np.allclose(trained.params["Dense_0"]["kernel"], repeated["Dense_0"]["kernel"])


def test_label_smoothing_is_in_the_plain_loss():
    data = synthetic_split(128, seed=8)
    batch = {"images": data.images, "labels": data.labels, "weights": jnp.ones(128)}
    state = _state(mlp_concise.MLP(num_hiddens=32))
    logits = steps.model_logits(state.apply_fn, state.params, batch["images"])
    targets = 0.9 * jax.nn.one_hot(batch["labels"], 10) + 0.1 / 10
    expected = optax.softmax_cross_entropy(logits, targets)
    np.testing.assert_allclose(steps.cross_entropy(logits, batch["labels"], 0.1), expected, 1e-6)
    smoothing = EpochOptions(label_smoothing=0.1)
    _, smoothed = train_step(state, batch, jax.random.key(0), options=smoothing)
    _, plain = train_step(state, batch, jax.random.key(0))
    np.testing.assert_allclose(smoothed.loss.total, expected.sum(), rtol=1e-5)
    assert float(smoothed.loss.total) > float(plain.loss.total)  # Smoothing raises the loss.


@pytest.mark.parametrize("seed", [0, 7, 2**31, 2**32 - 1])  # config.MAX_SEED is 2**32 - 1.
def test_every_valid_seed_initialises_the_key_an_eager_key_would_be(seed):
    state = steps.create_train_state(mlp_concise.MLP(num_hiddens=8), optax.sgd(0.1), seed)
    np.testing.assert_array_equal(state.rng, jax.random.key_data(jax.random.key(seed)))
