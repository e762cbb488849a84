"""On-device augmentations: shapes, value ranges, determinism given the key, and what each
one does to an image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_split

from mlp_jax import augment

IMAGES = jnp.asarray(synthetic_split(64, seed=0).images)


@pytest.mark.parametrize(
    "name, fn",
    [
        ("shift", lambda x, k: augment.shift_and_flip(x, k, max_shift=3)),
        ("flip", lambda x, k: augment.shift_and_flip(x, k, flip=True)),
        ("erase", lambda x, k: augment.random_erase(x, k, probability=1.0)),
    ],
)
def test_image_augmentations_keep_shape_dtype_and_range_and_follow_their_key(name, fn):
    out = fn(IMAGES, jax.random.key(1))
    assert out.shape == IMAGES.shape and out.dtype == jnp.uint8
    np.testing.assert_array_equal(fn(IMAGES, jax.random.key(1)), out)
    assert not np.array_equal(fn(IMAGES, jax.random.key(2)), out), name
    assert not np.array_equal(out, IMAGES), name


@pytest.mark.parametrize("mix", [augment.mixup, augment.cutmix])
def test_mixing_keeps_range_and_weighs_targets_by_each_images_share(mix):
    # Image i is flat at value (i + 1) / 65 and its target is class i of 64, so every output
    # pixel tells how much of it came from the image itself and how much from its partner.
    values = (jnp.arange(64) + 1) / 65
    images, targets = jnp.repeat(values[:, None], 784, axis=1), jnp.eye(64)
    out, mixed = mix(images, targets, jax.random.key(3), alpha=1.0)
    assert out.shape == images.shape and mixed.shape == targets.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    np.testing.assert_allclose(mixed.sum(axis=1), 1, rtol=1e-6)
    again = mix(images, targets, jax.random.key(3), alpha=1.0)
    np.testing.assert_array_equal(again[0], out)
    np.testing.assert_array_equal(again[1], mixed)
    own, partner = values[:, None], values[::-1][:, None]
    own_share_of_pixels = ((out - partner) / (own - partner)).mean(axis=1)
    np.testing.assert_allclose(own_share_of_pixels, jnp.diag(mixed), atol=1e-5)
    assert float(jnp.diag(mixed).std()) > 0.05  # Each example draws its own share.


def test_random_erase_sets_one_rectangle_to_zero():
    white = jnp.full((16, 784), 255, jnp.uint8)
    out = np.asarray(augment.random_erase(white, jax.random.key(0), probability=1.0))
    for image in out.reshape(16, 28, 28):
        rows, cols = np.nonzero(image == 0)
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 0.01 <= len(rows) / 784 <= 0.3
    none = augment.random_erase(white, jax.random.key(0), probability=0.0)
    np.testing.assert_array_equal(none, white)
