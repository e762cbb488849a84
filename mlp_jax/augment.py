"""Data augmentation on the device, inside the compiled epoch: pure functions of a batch and
a key, so a step's augmentation depends only on (seed, step) and a resumed run repeats it.

Image-space augmentations take and return uint8 images (B, 784) in [0, 255]: random
translations, horizontal flips and random erasing. Mixing augmentations (MixUp, CutMix) blend
each image with another of its batch and return float images in [0, 1] with soft targets.
"""

import jax
import jax.numpy as jnp

from mlp_jax.data import IMAGE_SHAPE, NUM_PIXELS

# Random erasing's rectangle: its area as a fraction of the image, and its aspect ratio, drawn
# uniformly (the ratio log-uniformly) from these ranges, as in Zhong et al. (2017).
ERASE_AREA = (0.02, 0.25)
ERASE_ASPECT = (0.3, 3.3)


def _grid():
    rows = jnp.arange(IMAGE_SHAPE[0])[:, None]
    cols = jnp.arange(IMAGE_SHAPE[1])[None, :]
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
