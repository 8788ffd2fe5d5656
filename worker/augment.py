"""Random geometric augmentation of training batches, in the tf.data pipeline.

    augment = make_augmenter("affine", seed)      # None for "none"
    images = augment(images)                      # float32 N x 28 x 28 x 1, raw pixels 0..255

Each image gets one random transform, applied in one bilinear resampling ("elastic" adds a
smooth random displacement field to the affine map, still in one resampling). Chaining Keras'
RandomRotation, RandomShear, RandomZoom and RandomTranslation resamples four times, and each
pass blurs the thin MNIST strokes; the model then trains on blurrier digits than it is tested
on. "shift" moves by whole pixels, which needs no interpolation at all.

It lives in the input pipeline, not in the model, so the saved model stays a plain classifier.
The fill value 0 is MNIST's background.

`make_augmenter` works on TensorFlow tensors (the worker's tf.data path). The default "shift"
also has a NumPy twin, `make_numpy_shifter`, for in-memory training on any Keras backend
(bench/gpu_check.py under JAX): the same offsets give the same pixels.
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

STROKE_RANGE = (-0.6, 1.0)
"""`stroke`: each image's strokes are thinned or thickened by a share w drawn from this range:
w > 0 blends the digit towards its grey-level dilation (3x3), w < 0 towards its erosion (3x3),
by |w|, then the brightest pixel is scaled to 255 as the clean-up of an image does. MNIST's strokes
are 2-3 px; photos of a fine-liner or a marker, after the clean-up, come out thinner or bolder
than that, with the even width the pen gave them."""


@dataclass(frozen=True)
class Elastic:
    """Simard et al. (2003)'s elastic distortion: uniform noise in [-1, 1] per pixel and axis,
    smoothed by a Gaussian of `sigma` pixels and scaled by `alpha` pixels. With the defaults the
    displacement's RMS is about 1.1 px, varying smoothly over about 5 px."""

    alpha: float = 34.0
    sigma: float = 5.0


ELASTIC = Elastic()
"""Default recipe ("shift"): whole-pixel shifts of up to +-2 px in each direction."""


def make_augmenter(kind: str, seed: int, affine: Affine = AFFINE, elastic: Elastic = ELASTIC) -> Callable | None:
    """A function from a float batch (N x 28 x 28 x 1) to a randomly transformed batch, or None.

    `kind` is "none", "shift", "stroke" (shift plus a random stroke width), "affine" or
    "elastic" (affine plus an elastic distortion).
    Random numbers come from a generator seeded with `seed`, so a job's augmentation repeats
    with its seed.
    """
    if kind == "none":
        return None
    if kind not in ("shift", "stroke", "affine", "elastic"):
        raise ValueError(f"unknown augmentation {kind!r}")
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)

    def shift(images):
        n = tf.shape(images)[0]
        offsets = tf.cast(rng.uniform((n, 2), -SHIFT_PIXELS, SHIFT_PIXELS + 1, dtype=tf.int32), tf.float32)
        still, unit = tf.zeros((n,)), tf.ones((n,))
        return _transform(images, _inverse_affine(still, still, unit, offsets, images.shape[1], images.shape[2]),
                          "NEAREST")

    def stroke(images):
        n = tf.shape(images)[0]
        w = rng.uniform((n, 1, 1, 1), *STROKE_RANGE)
        thicker = tf.nn.max_pool2d(images, 3, 1, "SAME")
        thinner = -tf.nn.max_pool2d(-images, 3, 1, "SAME")
        changed = images + tf.nn.relu(w) * (thicker - images) + tf.nn.relu(-w) * (thinner - images)
        peak = tf.reduce_max(changed, axis=(1, 2, 3), keepdims=True)
        return shift(changed * (255.0 / tf.maximum(peak, 1.0)))  # the brightest pixel at 255, as the clean-up makes it

    def random_inverse_affine(images):
        n = tf.shape(images)[0]
        u = rng.uniform((n, 5), -1.0, 1.0)
        angle = u[:, 0] * (affine.rotation_degrees * math.pi / 180.0)
        shear = u[:, 1] * affine.shear
        scale = 1.0 + u[:, 2] * affine.zoom
        offsets = u[:, 3:5] * affine.shift_pixels
        return _inverse_affine(angle, shear, scale, offsets, images.shape[1], images.shape[2])

    def random_affine(images):
        return _transform(images, random_inverse_affine(images), "BILINEAR")

    def random_elastic(images):
        n, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
        noise = rng.uniform((n, height, width, 2), -1.0, 1.0)
        field = _gaussian_blur(noise, elastic.sigma) * elastic.alpha
        return _warp(images, random_inverse_affine(images), field)

    return {"shift": shift, "stroke": stroke, "affine": random_affine, "elastic": random_elastic}[kind]


def shift_images(images, offsets, pixels: int = SHIFT_PIXELS):
    """`images` (NumPy, N x H x W x C, any dtype) each moved by whole pixels, without TensorFlow:
    image i by offsets[i] = (dx, dy), |dx|, |dy| <= `pixels`; what moves in is 0.

    The same pixels as make_augmenter("shift")'s transform with the same offsets
    (tests/unit/test_backend_augment.py). One gather from a zero-padded copy.
    """
    import numpy as np

    n, height, width = images.shape[:3]
    offsets = np.asarray(offsets, dtype=np.int64)
    padded = np.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels)) + ((0, 0),) * (images.ndim - 3))
    rows = np.arange(height)[None, :] - offsets[:, 1:2] + pixels  # output row y reads input row y - dy
    cols = np.arange(width)[None, :] - offsets[:, 0:1] + pixels
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def make_numpy_shifter(seed: int, pixels: int = SHIFT_PIXELS) -> Callable:
    """The default augmentation ("shift") on NumPy batches: offsets drawn uniformly from
    -pixels..pixels per axis and image, from a generator seeded with `seed`. (The draws differ
    from TensorFlow's generator in `make_augmenter`; their distribution is the same.)"""
    import numpy as np

    rng = np.random.default_rng(seed)

    def shift(images):
        return shift_images(images, rng.integers(-pixels, pixels + 1, size=(len(images), 2)), pixels)

    return shift


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


def _gaussian_blur(fields, sigma: float):
    """`fields` (N x H x W x C) smoothed by a normalised Gaussian of `sigma` pixels (zero padding,
    radius 2 sigma: the fields near the border, where MNIST has no ink, come out weaker)."""
    import numpy as np
    import tensorflow as tf

    radius = max(1, int(round(2 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    channels = fields.shape[-1]
    across = tf.constant(np.tile(taps[None, :, None, None], (1, 1, channels, 1)))
    down = tf.constant(np.tile(taps[:, None, None, None], (1, 1, channels, 1)))
    fields = tf.nn.depthwise_conv2d(fields, across, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(fields, down, [1, 1, 1, 1], "SAME")


def _warp(images, transforms, field):
    """Bilinear resampling of `images` (N x H x W x 1) at p_in = affine^-1(p_out) + field(p_out).

    `transforms` are inverse maps as `_inverse_affine` returns them; `field` (N x H x W x 2) is a
    displacement (dx, dy) in input pixels. Outside the image reads 0, MNIST's background.
    """
    import tensorflow as tf

    n, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    t = transforms[:, :, None, None]  # N x 8 x 1 x 1, against the H x W grid
    src_x = t[:, 0] * xs + t[:, 1] * ys + t[:, 2] + field[..., 0]
    src_y = t[:, 3] * xs + t[:, 4] * ys + t[:, 5] + field[..., 1]
    x0, y0 = tf.floor(src_x), tf.floor(src_y)
    fx, fy = src_x - x0, src_y - y0
    flat = tf.reshape(images, [-1])
    base = tf.reshape(tf.range(n) * (height * width), [-1, 1, 1])
    out = tf.zeros_like(src_x)
    for dy, wy in ((0.0, 1.0 - fy), (1.0, fy)):
        for dx, wx in ((0.0, 1.0 - fx), (1.0, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
            index = base + tf.cast(tf.clip_by_value(yi, 0, height - 1), tf.int32) * width \
                + tf.cast(tf.clip_by_value(xi, 0, width - 1), tf.int32)
            out += tf.where(inside, tf.gather(flat, index), 0.0) * wx * wy
    return out[..., None]
