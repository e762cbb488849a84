"""Pure JAX: state creation, the loss, one train step, a compiled epoch, exact evaluation.

No I/O, no logging, no config parsing: everything arrives as arguments or is bound with
`functools.partial`. `mlp_jax.parallel` and `mlp_jax.sweep` wrap these same functions, so
there is one train step in the whole codebase.

Data parallelism: with `axis_name` set, each device takes its slice of every global batch,
sums its per-example losses and gradients, and the sums are added across devices before
dividing by the global number of real examples. That is the exact global-batch gradient,
even for the padded last batch, where a mean of per-device means would not be.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from mlp_jax import augment
from mlp_jax.config import EpochOptions
from mlp_jax.data import NUM_CLASSES, NUM_PIXELS, Split
from mlp_jax.metrics import EvalMetrics, TrainMetrics

# Streams of randomness derived from the run's key by `fold_in`, so that every draw depends
# only on (seed, epoch, step) and a resumed run repeats an uninterrupted one bit for bit.
INIT_STREAM, DATA_STREAM, DROPOUT_STREAM, AUGMENT_STREAM = 0, 1, 2, 3
# The sub-stream of a step's dropout key that mixing (MixUp, CutMix) draws from.
MIX_STREAM = 1


class TrainState(train_state.TrainState):
    """Flax's TrainState plus what makes a run resumable from the state alone.

    Attributes:
      rng: raw key data (uint32) of the run's root key; raw so checkpoints can hold it.
      epoch: number of completed epochs.
    """

    rng: jax.Array
    epoch: jax.Array


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, seed: int | jax.Array
) -> TrainState:
    """Initialises parameters and optimiser state from `seed` (0..2**32 - 1), as one
    compiled program per model and optimiser (which the persistent compilation cache keeps),
    not the dozens of operations of an initialisation one by one: a quarter of a second off
    a run's start on a CPU, and a population of 1,024 members costs 1,024 dispatches."""
    # As uint32: a Python int would enter the program as int32 and overflow from 2**31.
    is_number = isinstance(seed, int | np.integer)
    return _create_train_state(model, tx, jax.device_put(np.uint32(seed)) if is_number else seed)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _create_train_state(model, tx, seed) -> TrainState:
    root = jax.random.key(seed)
    params = model.init(jax.random.fold_in(root, INIT_STREAM), jnp.zeros((1, NUM_PIXELS)))
    return TrainState.create(
        apply_fn=model.apply,
        params=params["params"],
        tx=tx,
        rng=jax.random.key_data(root),
        epoch=jnp.zeros((), jnp.int32),
    )


def scale_images(images_u8: jax.Array) -> jax.Array:
    """uint8 pixels to float32 in [0, 1]; done inside the compiled step, data stays uint8."""
    return images_u8.astype(jnp.float32) / 255.0


def model_logits(apply_fn, params, images, compute_dtype: str = "float32", **apply_kwargs):
    """The model's float32 logits for images (uint8 pixels, or floats in [0, 1] as mixing
    augmentations make them), computed in `compute_dtype`.

    Mixed precision, one mechanism for every model: the float32 parameters and the scaled
    images are cast to `compute_dtype` for the forward pass, so each matrix product takes
    bfloat16 operands (XLA accumulates them in float32), and the logits come back as float32
    for the softmax and the loss. The gradients reach the float32 parameters through the
    casts, so the optimiser never sees bfloat16. With "float32" the casts are no-ops.
    """
    dtype = jnp.dtype(compute_dtype)

    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    if images.dtype == jnp.uint8:
        images = scale_images(images)
    images = images.astype(dtype)
    logits = apply_fn({"params": jax.tree.map(cast, params)}, images, **apply_kwargs)
    return logits.astype(jnp.float32)


def cross_entropy(logits_BxC, labels_B, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy, optionally against smoothed targets."""
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)
    return optax.softmax_cross_entropy(logits_BxC, soft_targets(labels_B, label_smoothing))


def soft_targets(labels_B, label_smoothing: float = 0.0):
    """One-hot targets (B, NUM_CLASSES), smoothed by `label_smoothing`."""
    return optax.smooth_labels(jax.nn.one_hot(labels_B, NUM_CLASSES), label_smoothing)


def evaluation_params(state: "TrainState"):
    """The parameters to evaluate and predict with: the moving average where the optimiser
    keeps one (config.ema_decay), else the trained parameters."""
    ema = optax.tree_utils.tree_get(state.opt_state, "ema")
    return state.params if ema is None else ema


def mix(images_BxD, labels_B, key, *, label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0):
    """MixUp or CutMix of a batch (one of the two at random when both are on): float images
    in [0, 1] and their mixed soft targets."""
    images, targets = scale_images(images_BxD), soft_targets(labels_B, label_smoothing)
    if not cutmix_alpha:
        return augment.mixup(images, targets, key, alpha=mixup_alpha)
    if not mixup_alpha:
        return augment.cutmix(images, targets, key, alpha=cutmix_alpha)
    choice_key, mix_key = jax.random.split(key)
    return jax.lax.cond(
        jax.random.bernoulli(choice_key),
        lambda: augment.mixup(images, targets, mix_key, alpha=mixup_alpha),
        lambda: augment.cutmix(images, targets, mix_key, alpha=cutmix_alpha),
    )


def _sum_over_devices(tree, axis_name: str | None):
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def batch_layout(order_N, batch_size: int):
    """Cuts an example order into batches, padding the last one with weight-0 examples.

    Returns:
      (indices, weights), both (num_batches, batch_size); padded slots point at example 0
      and weigh 0, so they change neither the loss nor the gradient.
    """
    num_examples = order_N.shape[0]
    num_batches = -(-num_examples // batch_size)
    pad = num_batches * batch_size - num_examples
    indices = jnp.concatenate([order_N, jnp.zeros(pad, order_N.dtype)])
    weights = jnp.concatenate([jnp.ones(num_examples), jnp.zeros(pad)])
    return indices.reshape(num_batches, batch_size), weights.reshape(num_batches, batch_size)


def _local_columns(x_NxB, axis_name: str | None):
    """This device's contiguous share of every batch (all of it without an axis)."""
    if axis_name is None:
        return x_NxB
    num_devices = jax.lax.psum(1, axis_name)
    share = x_NxB.shape[1] // num_devices
    start = jax.lax.axis_index(axis_name) * share
    return jax.lax.dynamic_slice_in_dim(x_NxB, start, share, axis=1)


def train_step(
    state: TrainState,
    batch: dict,
    rng: jax.Array,
    *,
    options: EpochOptions = EpochOptions(),
    axis_name=None,
):
    """One optimiser step on a batch whose padded examples have weight 0.

    Args:
      state: the train state.
      batch: "images" (B, 784) uint8, "labels" (B,) int32, "weights" (B,) float32.
      rng: key for dropout (and for MixUp or CutMix, folded apart).
      options: what the step reads of them: label smoothing of the target; MixUp and CutMix
        (see `mix`; the train metrics then score the logits against each image's own label);
        the dtype of the forward and backward arithmetic (see `model_logits`).
      axis_name: the device axis when data-parallel, else None.

    Returns:
      (new state, TrainMetrics of this batch on this device).
    """
    weights_B = batch["weights"]
    total_weight = _sum_over_devices(weights_B.sum(), axis_name)
    images, targets_BxC = batch["images"], None
    if options.mixup_alpha or options.cutmix_alpha:
        images, targets_BxC = mix(
            images,
            batch["labels"],
            jax.random.fold_in(rng, MIX_STREAM),
            label_smoothing=options.label_smoothing,
            mixup_alpha=options.mixup_alpha,
            cutmix_alpha=options.cutmix_alpha,
        )

    def loss_fn(params):
        logits_BxC = model_logits(
            state.apply_fn,
            params,
            images,
            options.compute_dtype,
            train=True,
            rngs={"dropout": rng},
        )
        if targets_BxC is None:
            loss_B = cross_entropy(logits_BxC, batch["labels"], options.label_smoothing)
        else:
            loss_B = optax.softmax_cross_entropy(logits_BxC, targets_BxC)
        return jnp.sum(loss_B * weights_B) / total_weight, (logits_BxC, loss_B)

    grads, (logits_BxC, loss_B) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = _sum_over_devices(grads, axis_name)
    metrics = TrainMetrics.single_from_model_output(
        loss=loss_B, logits=logits_BxC, labels=batch["labels"], mask=weights_B > 0
    )
    return state.apply_gradients(grads=grads), metrics


def _sum_steps(stacked_metrics):
    """Merges per-step metric collections stacked by `lax.scan` (their fields are sums)."""
    return jax.tree.map(lambda x: x.sum(axis=0), stacked_metrics)


def train_epoch(
    state: TrainState,
    data: Split,
    *,
    options: EpochOptions = EpochOptions(),
    axis_name=None,
    shared_order: bool = False,
):
    """One pass over `data` in a fresh random order, as one compiled `lax.scan`.

    Every example is visited once; the order depends only on (seed, epoch). Metrics are exact
    sums over the epoch's examples (each taken with the parameters of its step). Every
    training image is augmented afresh each step as `options` ask (see
    `mlp_jax.augment.augment_images`); MixUp and CutMix happen in `train_step`.

    Args:
      state: the train state; with `shared_order`, a population of them stacked along a
        leading axis, every member from the same seed at the same step.
      data: the split to train on.
      options: the epoch's options.
      axis_name: the device axis when data-parallel, else None.
      shared_order: the members of the population `state` share one order, and so every
        random draw of the epoch: it is drawn once (from the first member's key), each batch
        is gathered and augmented once, and the step is vmapped over the members with the
        batch unbatched, so that a layer's product with the batch is one wide product for
        all of them. Each member trains as it would alone (to float rounding).

    Returns:
      (state after the epoch, TrainMetrics summed over the epoch and all devices; with
      `shared_order`, one per member).
    """
    first = (lambda x: x[0]) if shared_order else (lambda x: x)
    step = functools.partial(train_step, options=options, axis_name=axis_name)
    if shared_order:
        step = jax.vmap(step, in_axes=(0, None, None))
    root = jax.random.wrap_key_data(first(state.rng))
    epoch_key = jax.random.fold_in(jax.random.fold_in(root, DATA_STREAM), first(state.epoch))
    dropout_key = jax.random.fold_in(root, DROPOUT_STREAM)
    augment_key = jax.random.fold_in(root, AUGMENT_STREAM)
    if axis_name is not None:
        device = jax.lax.axis_index(axis_name)
        dropout_key = jax.random.fold_in(dropout_key, device)
        augment_key = jax.random.fold_in(augment_key, device)
    order = jax.random.permutation(epoch_key, data.labels.shape[0])
    layout = batch_layout(order, options.batch_size)
    indices, weights = (_local_columns(x, axis_name) for x in layout)
    # The step number of each batch, known before the scan: read from the state inside it,
    # a population spread over devices would fetch its first member's at every step.
    step_numbers = first(state.step) + jnp.arange(indices.shape[0], dtype=jnp.int32)

    def body(state, batch_layout_and_step):
        idx_B, weights_B, step_number = batch_layout_and_step
        step_augment_key = jax.random.fold_in(augment_key, step_number)
        images = augment.augment_images(data.images[idx_B], step_augment_key, options)
        batch = {"images": images, "labels": data.labels[idx_B], "weights": weights_B}
        return step(state, batch, jax.random.fold_in(dropout_key, step_number))

    state, stacked = jax.lax.scan(
        body, state, (indices, weights, step_numbers), unroll=options.scan_unroll
    )
    state = state.replace(epoch=state.epoch + 1)
    return state, _sum_over_devices(_sum_steps(stacked), axis_name)


def evaluate(
    state: TrainState,
    data: Split,
    *,
    batch_size: int,
    compute_dtype: str = "float32",
    axis_name=None,
):
    """Exact loss and accuracy over every example of `data` (not a mean of batch means),
    with `evaluation_params` (the moving average of the parameters where one is kept).

    With `axis_name`, each device evaluates its share of every chunk; `batch_size` must then be
    a multiple of the device count (`mlp_jax.parallel` rounds it up).

    Returns:
      EvalMetrics summed over all examples.
    """
    num_examples = data.labels.shape[0]
    num_devices = 1 if axis_name is None else jax.lax.psum(1, axis_name)
    # A chunk longer than the split would be padding only: memory (a config's 2e9 asked
    # for terabytes), never results.
    batch_size = min(batch_size, -(-num_examples // num_devices) * num_devices)
    order = jnp.arange(num_examples)
    indices, weights = (_local_columns(x, axis_name) for x in batch_layout(order, batch_size))
    params = evaluation_params(state)

    def body(_, batch_indices_and_weights):
        idx_B, weights_B = batch_indices_and_weights
        labels_B = data.labels[idx_B]
        logits_BxC = model_logits(state.apply_fn, params, data.images[idx_B], compute_dtype)
        metrics = EvalMetrics.single_from_model_output(
            loss=cross_entropy(logits_BxC, labels_B),
            logits=logits_BxC,
            labels=labels_B,
            mask=weights_B > 0,
        )
        return None, metrics

    _, stacked = jax.lax.scan(body, None, (indices, weights))
    return _sum_over_devices(_sum_steps(stacked), axis_name)


def train_epochs(
    state: TrainState,
    train_data: Split,
    val_data: Split,
    *,
    num_epochs: int,
    options: EpochOptions = EpochOptions(),
    eval_batch_size: int,
    axis_name=None,
    shared_order: bool = False,
):
    """`num_epochs` epochs, each followed by its exact validation, as one program: the same
    `train_epoch` and `evaluate`, with no return to the host between epochs.

    With `shared_order`, `state` is a population sharing one data order (see `train_epoch`)
    and each member is validated apart.

    Returns:
      (state after the last epoch, TrainMetrics and EvalMetrics of each epoch, stacked along
      a leading axis of `num_epochs`; with `shared_order`, one per member along the next).
    """
    validate = functools.partial(
        evaluate,
        batch_size=eval_batch_size,
        compute_dtype=options.compute_dtype,
        axis_name=axis_name,
    )
    if shared_order:
        validate = jax.vmap(validate, (0, None))

    def one_epoch(state, _):
        state, train_metrics = train_epoch(
            state, train_data, options=options, axis_name=axis_name, shared_order=shared_order
        )
        return state, (train_metrics, validate(state, val_data))

    return jax.lax.scan(one_epoch, state, length=num_epochs)


def predict(state_or_params, apply_fn, images_u8, compute_dtype: str = "float32"):
    """Class indices predicted for uint8 images of shape (B, 784) or (B, 28, 28), by a train
    state's `evaluation_params` or by the parameters given."""
    is_state = isinstance(state_or_params, TrainState)
    params = evaluation_params(state_or_params) if is_state else state_or_params
    images = images_u8.reshape(images_u8.shape[0], NUM_PIXELS)
    return jnp.argmax(model_logits(apply_fn, params, images, compute_dtype), axis=-1)
