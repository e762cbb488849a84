"""On-device augmentations: shapes, value ranges, determinism given the key, and what each
one does to an image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import synthetic_split

from mlp_jax import augment

IMAGES = jnp.asarray(synthetic_split(64, seed=0).images)


@pytest.mark.parametrize(
    "name, fn",
    [
        ("shift", lambda x, k: augment.shift_and_flip(x, k, max_shift=3)),
        ("flip", lambda x, k: augment.shift_and_flip(x, k, flip=True)),
        ("erase", lambda x, k: augment.random_erase(x, k, probability=1.0)),
        ("rotate", lambda x, k: augment.distort(x, k, rotate=10.0)),
        ("scale", lambda x, k: augment.distort(x, k, scale=0.1)),
        ("elastic", lambda x, k: augment.distort(x, k, elastic=34.0)),
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


def test_bilinear_sampling_reads_exact_pixels_and_fills_outside_with_zero():
    images = jnp.asarray(IMAGES[:8].reshape(8, 28, 28))
    rows, cols = (jnp.broadcast_to(a.astype(jnp.float32), (8, 28, 28)) for a in augment._grid())
    np.testing.assert_array_equal(augment._bilinear(images, rows, cols), images)
    # Reading 2 rows down and 3 columns left moves the image up 2 and right 3, zeros coming in.
    moved = np.zeros((8, 28, 28), np.float32)
    moved[:, :26, 3:] = np.asarray(images)[:, 2:, :25]
    np.testing.assert_array_equal(augment._bilinear(images, rows + 2, cols - 3), moved)
    half = augment._bilinear(images, rows, cols + 0.5)[:, :, :27]
    np.testing.assert_allclose(half, (images[:, :, :27] + images[:, :, 1:].astype(float)) / 2)


def _principal_angle(image_HxW) -> float:
    """The angle (degrees, in [-90, 90)) of an image's principal axis of intensity."""
    rows, cols = np.nonzero(image_HxW)
    covariance = np.cov(np.stack([rows, cols]), aweights=image_HxW[rows, cols].astype(float))
    d_row, d_col = np.linalg.eigh(covariance)[1][:, -1]
    return (np.degrees(np.arctan2(d_row, d_col)) + 90) % 180 - 90


def test_rotation_and_scaling_stay_within_their_ranges_and_use_them():
    bar = np.zeros((256, 28, 28), np.uint8)
    bar[:, 13:15, 4:24] = 255  # A horizontal bar 20 pixels long through the centre.
    flat = jnp.asarray(bar.reshape(256, 784))
    rotated = np.asarray(augment.distort(flat, jax.random.key(0), rotate=15.0)).reshape(-1, 28, 28)
    angles = np.array([_principal_angle(image) for image in rotated])
    assert np.abs(angles).max() <= 16 and angles.min() < -10 and angles.max() > 10
    scaled = np.asarray(augment.distort(flat, jax.random.key(0), scale=0.2)).reshape(-1, 28, 28)
    assert np.abs([_principal_angle(image) for image in scaled]).max() < 1
    lengths = (scaled.max(axis=1) >= 128).sum(axis=1)  # Zoomed by 0.8 to 1.2: 16 to 24.
    assert 15 <= lengths.min() <= 17 and 23 <= lengths.max() <= 25


def test_elastic_field_moves_pixels_as_simards_field_does():
    # Simard's field: uniform [-1, 1] noise at every pixel convolved with a normalised Gaussian
    # of sigma pixels, times alpha: its rms is alpha * sqrt(1/3) / (2 sqrt(pi) sigma).
    sigma, alpha = augment.ELASTIC_SIGMA, 34.0
    basis = augment._elastic_basis(sigma)
    weights = jax.random.uniform(jax.random.key(0), (2000, basis.shape[0]), minval=-1)
    field = np.asarray(alpha * weights @ basis).reshape(-1, 28, 28)
    expected_rms = alpha * np.sqrt(1 / 3) / (2 * np.sqrt(np.pi) * sigma)
    assert abs(field.std() / expected_rms - 1) < 0.05
    for row, col in ((0, 0), (14, 14), (27, 5)):  # As strong at the border as in the middle.
        assert abs(field[:, row, col].std() / expected_rms - 1) < 0.1
    # Smooth: neighbouring pixels move almost together, pixels 14 apart nearly independently.
    assert np.corrcoef(field[:, 10, 10], field[:, 10, 11])[0, 1] > 0.95
    assert abs(np.corrcoef(field[:, 10, 0], field[:, 10, 14])[0, 1]) < 0.2


def test_elastic_field_moves_rows_and_columns_independently():
    # A blob at the centre follows the field there: its centre of mass moves by a draw of the
    # row field and a draw of the column field, which are independent (one field for both
    # axes would move every blob along the diagonal).
    rows, cols = np.mgrid[:28, :28]
    blob = 255 * np.exp(-((rows - 13.5) ** 2 + (cols - 13.5) ** 2) / (2 * 2.0**2))
    flat = jnp.asarray(np.broadcast_to(blob.round().astype(np.uint8).reshape(784), (512, 784)))
    moved = np.asarray(augment.distort(flat, jax.random.key(0), elastic=34.0), np.float64)
    moved = moved.reshape(512, 28, 28)
    mass = moved.sum(axis=(1, 2))
    d_rows = (moved * rows).sum(axis=(1, 2)) / mass - 13.5
    d_cols = (moved * cols).sum(axis=(1, 2)) / mass - 13.5
    assert d_rows.std() > 0.3 and d_cols.std() > 0.3
    assert abs(np.corrcoef(d_rows, d_cols)[0, 1]) < 0.2
