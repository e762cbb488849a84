"""Data augmentation on the device, inside the compiled epoch: pure functions of a batch and
a key, so a step's augmentation depends only on (seed, step) and a resumed run repeats it.

Image-space augmentations take and return uint8 images (B, 784) in [0, 255]: random
translations, horizontal flips, small affine and elastic distortions, and random erasing.
Mixing augmentations (MixUp, CutMix) blend each image with another of its batch and return
float images in [0, 1] with soft targets.

`augment_images` applies the image-space augmentations an `mlp_jax.config.EpochOptions`
turns on, in the order `IMAGE_AUGMENTATIONS` lists them: a new augmentation is its function
here, its `Field` (an `epoch_option`) in `mlp_jax.config.BASE_FIELDS`, and one entry in that
table.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mlp_jax.data import IMAGE_SHAPE, NUM_PIXELS

# Random erasing's rectangle: its area as a fraction of the image, and its aspect ratio, drawn
# uniformly (the ratio log-uniformly) from these ranges, as in Zhong et al. (2017).
ERASE_AREA = (0.02, 0.25)
ERASE_ASPECT = (0.3, 3.3)
# Standard deviation (pixels) of the Gaussian that smooths an elastic distortion's random
# displacement field: Simard et al. (2003) found 4 best for 28x28 digits (smaller fields
# look like noise, larger ones like affine maps).
ELASTIC_SIGMA = 4.0
# Sub-streams of a step's augmentation key (folded in), so each augmentation draws its own.
ERASE_STREAM, DISTORT_STREAM = 1, 2


def _grid():
    """The pixels' row and column indices, (1, H, 1) and (1, 1, W): of a batch's rank, so
    that they meet per-image values (B, 1, 1) without implicit rank promotion."""
    rows = jnp.arange(IMAGE_SHAPE[0])[None, :, None]
    cols = jnp.arange(IMAGE_SHAPE[1])[None, None, :]
    return rows, cols


def shift_and_flip(images_BxD, key, *, max_shift: int = 0, flip: bool = False):
    """Random translations by up to `max_shift` pixels each way (zero fill) and random
    horizontal flips, one draw per image."""
    num, side = images_BxD.shape[0], IMAGE_SHAPE[0]
    images_BxHxW = images_BxD.reshape(num, *IMAGE_SHAPE)
    shift_key, flip_key = jax.random.split(key)
    if max_shift:
        pad = ((0, 0), (max_shift, max_shift), (max_shift, max_shift))
        padded = jnp.pad(images_BxHxW, pad)
        offsets_Bx2 = jax.random.randint(shift_key, (num, 2), 0, 2 * max_shift + 1)
        crop = jax.vmap(lambda image, offset: jax.lax.dynamic_slice(image, offset, (side, side)))
        images_BxHxW = crop(padded, offsets_Bx2)
    if flip:
        flip_B = jax.random.bernoulli(flip_key, 0.5, (num,))
        images_BxHxW = jnp.where(flip_B[:, None, None], images_BxHxW[:, :, ::-1], images_BxHxW)
    return images_BxHxW.reshape(num, NUM_PIXELS)


def _elastic_basis(sigma: float) -> jax.Array:
    """(L, 784): Gaussian bumps of `sigma` pixels centred on a lattice of spacing `sigma`
    that extends `sigma` beyond the image, weighted so that `weights_BxL @ basis` with
    weights uniform in [-1, 1] has the variance of Simard's field (uniform noise at every
    pixel convolved with the normalised Gaussian). Noise on the lattice instead of at every
    pixel draws 81 numbers an image instead of 784 and smooths with one matrix product:
    the Gaussian passes almost nothing finer than the lattice, so the fields look alike."""
    centres = jnp.arange(-sigma, IMAGE_SHAPE[0] + sigma, sigma)
    rows, cols = (axis.astype(jnp.float32).reshape(-1) for axis in jnp.broadcast_arrays(*_grid()))
    d_rows = rows[None, :] - jnp.repeat(centres, len(centres))[:, None]
    d_cols = cols[None, :] - jnp.tile(centres, len(centres))[:, None]
    gauss = jnp.exp(-(d_rows**2 + d_cols**2) / (2 * sigma**2)) / (2 * jnp.pi * sigma**2)
    return sigma * gauss


def _bilinear(images_BxHxW, rows_BxHxW, cols_BxHxW):
    """Samples each image at fractional (row, col) positions; outside the image is 0."""
    num, height, width = images_BxHxW.shape
    # Borders of zeros (one before, two after), and positions clipped into them, so every
    # corner read is in bounds and a position outside the image reads exactly 0.
    padded = jnp.pad(images_BxHxW.astype(jnp.float32), ((0, 0), (1, 2), (1, 2)))
    rows = jnp.clip(rows_BxHxW + 1, 0, height + 1)
    cols = jnp.clip(cols_BxHxW + 1, 0, width + 1)
    top, left = jnp.floor(rows), jnp.floor(cols)
    down, right = rows - top, cols - left
    flat = padded.reshape(num, -1)
    stride = width + 3

    def read(r, c):
        index = (r.astype(jnp.int32) * stride + c.astype(jnp.int32)).reshape(num, -1)
        return jnp.take_along_axis(flat, index, axis=1).reshape(rows.shape)

    return (
        read(top, left) * (1 - down) * (1 - right)
        + read(top, left + 1) * (1 - down) * right
        + read(top + 1, left) * down * (1 - right)
        + read(top + 1, left + 1) * down * right
    )


def distort(images_BxD, key, *, rotate: float = 0.0, scale: float = 0.0, elastic: float = 0.0):
    """Small random distortions, one draw per image, resampled bilinearly (zero fill):
    rotation about the centre by up to `rotate` degrees each way, scaling by a factor in
    [1 - scale, 1 + scale], and an elastic distortion (Simard et al. 2003): a uniform random
    displacement field smoothed by a Gaussian of ELASTIC_SIGMA pixels and scaled by
    `elastic` (their alpha; 34, theirs for digits, moves each pixel by 1.4 pixels rms)."""
    num = images_BxD.shape[0]
    angle_key, scale_key, field_key = jax.random.split(key, 3)
    angle_B = jnp.deg2rad(jax.random.uniform(angle_key, (num,), minval=-rotate, maxval=rotate))
    zoom_B = jax.random.uniform(scale_key, (num,), minval=1 - scale, maxval=1 + scale)
    centre = (IMAGE_SHAPE[0] - 1) / 2  # The images are square.
    rows, cols = (axis.astype(jnp.float32) - centre for axis in _grid())
    # Each output pixel reads the source position that the inverse map sends it to.
    cos, sin = (f(angle_B)[:, None, None] / zoom_B[:, None, None] for f in (jnp.cos, jnp.sin))
    source_rows = cos * rows - sin * cols + centre
    source_cols = sin * rows + cos * cols + centre
    if elastic:
        basis_LxD = _elastic_basis(ELASTIC_SIGMA)
        weights = jax.random.uniform(field_key, (2 * num, basis_LxD.shape[0]), minval=-1)
        field_Bx2xHxW = (elastic * weights @ basis_LxD).reshape(num, 2, *IMAGE_SHAPE)
        source_rows = source_rows + field_Bx2xHxW[:, 0]
        source_cols = source_cols + field_Bx2xHxW[:, 1]
    images_BxHxW = images_BxD.reshape(num, *IMAGE_SHAPE)
    warped = _bilinear(images_BxHxW, source_rows, source_cols)
    return jnp.clip(jnp.round(warped), 0, 255).astype(images_BxD.dtype).reshape(num, -1)


def _boxes(key, num: int, area_B, aspect_B):
    """Masks (B, 28, 28) of axis-aligned boxes of the given areas (fractions of the image)
    and aspect ratios (height / width), placed uniformly at random inside the image."""
    height, width = IMAGE_SHAPE
    box_h = jnp.clip(jnp.round(jnp.sqrt(area_B * aspect_B) * height), 1, height).astype(jnp.int32)
    box_w = jnp.clip(jnp.round(jnp.sqrt(area_B / aspect_B) * width), 1, width).astype(jnp.int32)
    top_key, left_key = jax.random.split(key)
    top = jax.random.randint(top_key, (num,), 0, height - box_h + 1)
    left = jax.random.randint(left_key, (num,), 0, width - box_w + 1)
    rows, cols = _grid()
    return (
        (rows >= top[:, None, None])
        & (rows < (top + box_h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + box_w)[:, None, None])
    )


def random_erase(images_BxD, key, *, probability: float):
    """With `probability`, sets a random rectangle of each image to 0 (the background)."""
    num = images_BxD.shape[0]
    apply_key, area_key, aspect_key, box_key = jax.random.split(key, 4)
    area_B = jax.random.uniform(area_key, (num,), minval=ERASE_AREA[0], maxval=ERASE_AREA[1])
    log_aspect = jax.random.uniform(
        aspect_key, (num,), minval=jnp.log(ERASE_ASPECT[0]), maxval=jnp.log(ERASE_ASPECT[1])
    )
    erase_BxHxW = _boxes(box_key, num, area_B, jnp.exp(log_aspect))
    erase_BxHxW &= jax.random.bernoulli(apply_key, probability, (num,))[:, None, None]
    images_BxHxW = images_BxD.reshape(num, *IMAGE_SHAPE)
    return jnp.where(erase_BxHxW, jnp.zeros_like(images_BxHxW), images_BxHxW).reshape(num, -1)


def mixup(images_BxD, targets_BxC, key, *, alpha: float):
    """MixUp (Zhang et al. 2018): each image and target blended with those of the example
    at the mirrored position of the batch, weight lam ~ Beta(alpha, alpha) per example.
    Takes float images in [0, 1]; returns (images, targets), convex combinations of both."""
    lam_B = jax.random.beta(key, alpha, alpha, (images_BxD.shape[0],))
    images = lam_B[:, None] * images_BxD + (1 - lam_B[:, None]) * images_BxD[::-1]
    targets = lam_B[:, None] * targets_BxC + (1 - lam_B[:, None]) * targets_BxC[::-1]
    return images, targets


def cutmix(images_BxD, targets_BxC, key, *, alpha: float):
    """CutMix (Yun et al. 2019): a box of area 1 - lam, lam ~ Beta(alpha, alpha), pasted into
    each image from the example at the mirrored position; the targets are mixed by the box's
    exact share of the pixels. Takes float images in [0, 1]."""
    num = images_BxD.shape[0]
    lam_key, aspect_key, box_key = jax.random.split(key, 3)
    lam_B = jax.random.beta(lam_key, alpha, alpha, (num,))
    log_aspect = jax.random.uniform(aspect_key, (num,), minval=-jnp.log(2.0), maxval=jnp.log(2.0))
    box_BxHxW = _boxes(box_key, num, 1 - lam_B, jnp.exp(log_aspect)).reshape(num, NUM_PIXELS)
    images = jnp.where(box_BxHxW, images_BxD[::-1], images_BxD)
    kept_B = 1 - box_BxHxW.mean(axis=1)
    targets = kept_B[:, None] * targets_BxC + (1 - kept_B[:, None]) * targets_BxC[::-1]
    return images, targets


class ImageAugmentation(NamedTuple):
    """One image-space augmentation of the compiled epoch.

    Attributes:
      enabled: whether the epoch's options turn it on (a Python bool: it decides the program).
      stream: the sub-stream of the step's augmentation key it draws from (folded in), or
        None for that key itself.
      apply: (images_BxD uint8, key, options) -> images_BxD uint8.
    """

    enabled: Callable[[Any], bool]
    stream: int | None
    apply: Callable[[jax.Array, jax.Array, Any], jax.Array]


# In the order they apply to each batch: distorted, then shifted and flipped, then erased.
IMAGE_AUGMENTATIONS = (
    ImageAugmentation(
        lambda o: bool(o.augment_rotate or o.augment_scale or o.augment_elastic),
        DISTORT_STREAM,
        lambda x, k, o: distort(
            x, k, rotate=o.augment_rotate, scale=o.augment_scale, elastic=o.augment_elastic
        ),
    ),
    ImageAugmentation(
        lambda o: bool(o.augment_shift or o.augment_flip),
        None,
        lambda x, k, o: shift_and_flip(x, k, max_shift=o.augment_shift, flip=o.augment_flip),
    ),
    ImageAugmentation(
        lambda o: bool(o.augment_erase),
        ERASE_STREAM,
        lambda x, k, o: random_erase(x, k, probability=o.augment_erase),
    ),
)


def augment_images(images_BxD, key, options):
    """A batch's uint8 images with every image-space augmentation `options` (an
    `EpochOptions`) turns on, each drawing from its stream of the step's key `key`."""
    for augmentation in IMAGE_AUGMENTATIONS:
        if augmentation.enabled(options):
            stream_key = (
                key if augmentation.stream is None else jax.random.fold_in(key, augmentation.stream)
            )
            images_BxD = augmentation.apply(images_BxD, stream_key, options)
    return images_BxD
