"""Random geometric augmentation of training batches, in the tf.data pipeline.

    augment = make_augmenter("affine", seed)      # None for "none"
    images = augment(images)                      # float32 N x 28 x 28 x 1, raw pixels 0..255

Each image gets one random transform, applied in one bilinear resampling. Chaining Keras'
RandomRotation, RandomShear, RandomZoom and RandomTranslation resamples four times, and each
pass blurs the thin MNIST strokes; the model then trains on blurrier digits than it is tested
on. "shift" moves by whole pixels, which needs no interpolation at all.

It lives in the input pipeline, not in the model, so the saved model stays a plain classifier.
The fill value 0 is MNIST's background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Affine:
    """Ranges of the random affine transform; each is drawn uniformly from [-x, +x]."""

    rotation_degrees: float = 10.0
    shear: float = 0.1  # horizontal shear factor: x' = x + shear * y
    zoom: float = 0.1  # scale factor 1 +- zoom
    shift_pixels: float = 2.0


AFFINE = Affine()
"""`--augment`: rotation +-10 degrees, shear +-0.1, zoom +-10% and shift +-2 px, as the
tutorials suggest (their "affine distortions")."""

SHIFT_PIXELS = 2
"""Default recipe ("shift"): whole-pixel shifts of up to +-2 px in each direction."""


def make_augmenter(kind: str, seed: int, affine: Affine = AFFINE) -> Callable | None:
    """A function from a float batch (N x 28 x 28 x 1) to a randomly transformed batch, or None.

    `kind` is "none", "shift" or "affine". Random numbers come from a generator seeded with
    `seed`, so a job's augmentation repeats with its seed.
    """
    if kind == "none":
        return None
    if kind not in ("shift", "affine"):
        raise ValueError(f"unknown augmentation {kind!r}")
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)

    def shift(images):
        n = tf.shape(images)[0]
        offsets = tf.cast(rng.uniform((n, 2), -SHIFT_PIXELS, SHIFT_PIXELS + 1, dtype=tf.int32), tf.float32)
        still, unit = tf.zeros((n,)), tf.ones((n,))
        return _transform(images, _inverse_affine(still, still, unit, offsets, images.shape[1], images.shape[2]),
                          "NEAREST")

    def random_affine(images):
        n = tf.shape(images)[0]
        u = rng.uniform((n, 5), -1.0, 1.0)
        angle = u[:, 0] * (affine.rotation_degrees * math.pi / 180.0)
        shear = u[:, 1] * affine.shear
        scale = 1.0 + u[:, 2] * affine.zoom
        offsets = u[:, 3:5] * affine.shift_pixels
        return _transform(images, _inverse_affine(angle, shear, scale, offsets, images.shape[1], images.shape[2]),
                          "BILINEAR")

    return shift if kind == "shift" else random_affine


def _inverse_affine(angle, shear, scale, offsets, height: int, width: int):
    """Inverse maps (output pixel -> input pixel, N x 8) of: rotate by `angle` (radians), shear,
    scale about the image centre, then shift by `offsets` (dx, dy pixels).

    Forward: p_out = c + S R H (p_in - c) + t; inverse: p_in = c + (S R H)^-1 (p_out - c - t).
    """
    import tensorflow as tf

    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # M = scale * R @ H with R = [[cos, -sin], [sin, cos]] and H = [[1, shear], [0, 1]].
    m00, m01 = scale * cos, scale * (cos * shear - sin)
    m10, m11 = scale * sin, scale * (sin * shear + cos)
    det = m00 * m11 - m01 * m10
    a0, a1, b0, b1 = m11 / det, -m01 / det, -m10 / det, m00 / det
    ox, oy = cx + offsets[:, 0], cy + offsets[:, 1]  # where the centre goes
    a2 = cx - a0 * ox - a1 * oy
    b2 = cy - b0 * ox - b1 * oy
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _transform(images, transforms, interpolation: str):
    import tensorflow as tf

    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation=interpolation, fill_mode="CONSTANT")
