"""The training augmentations: geometry checked on 256 real MNIST digits and a synthetic image.

TensorFlow runs in one subprocess (pytest's own process must not import it: other tests fork
workers); it prints the measurements as JSON and the tests below check them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

MEASURE = """
import json
import numpy as np
import tensorflow as tf
from digitq.common.settings import load_settings
from digitq.worker.augment import Affine, Elastic, _gaussian_blur, _inverse_affine, _transform, _warp, make_augmenter
from digitq.worker.data import load_mnist

x = load_mnist(load_settings())["train_images"][:256, :, :, None].astype(np.float32)


def edge_contrast(images):
    # Total absolute difference between neighbouring pixels per unit of ink (blur lowers it).
    return float((np.abs(np.diff(images, axis=1)).sum() + np.abs(np.diff(images, axis=2)).sum()) / images.sum())


out = {"none": make_augmenter("none", 0) is None}
try:
    make_augmenter("sepia", 0)
except ValueError as exc:
    out["unknown"] = str(exc)

shifted = make_augmenter("shift", 0)(tf.constant(x)).numpy()
out["shift"] = {
    "only_input_levels": all(set(np.unique(a)) <= set(np.unique(b)) | {0.0} for a, b in zip(shifted, x)),
    "never_more_ink": bool(np.all(shifted.sum(axis=(1, 2, 3)) <= x.sum(axis=(1, 2, 3)))),
    "moved": int(sum(not np.array_equal(a, b) for a, b in zip(shifted, x))),
    "ink_kept": float(shifted.sum() / x.sum()),
}

still = make_augmenter("affine", 0, Affine(rotation_degrees=0, shear=0, zoom=0, shift_pixels=0))
out["identity_error"] = float(np.abs(still(tf.constant(x)).numpy() - x).max())

warped = make_augmenter("affine", 0)(tf.constant(x)).numpy()
ratio = warped.sum(axis=(1, 2, 3)) / x.sum(axis=(1, 2, 3))
out["affine"] = {
    "shape": list(warped.shape), "ink_ratio_min": float(ratio.min()), "ink_ratio_max": float(ratio.max()),
    "saturated_kept": float((warped >= 250).sum() / (x >= 250).sum()),
    "edge_contrast_kept": edge_contrast(warped) / edge_contrast(x),
}

image = np.zeros((1, 5, 5, 1), np.float32)
image[0, 0, 2, 0] = 1.0  # top middle
quarter = _inverse_affine(tf.constant([np.pi / 2]), tf.constant([0.0]), tf.constant([1.0]),
                          tf.constant([[0.0, 0.0]]), 5, 5)
out["quarter_turn"] = _transform(tf.constant(image), quarter, "BILINEAR").numpy()[0, :, :, 0].tolist()

a = make_augmenter("affine", 7)(tf.constant(x[:8])).numpy()
b = make_augmenter("affine", 7)(tf.constant(x[:8])).numpy()
c = make_augmenter("affine", 8)(tf.constant(x[:8])).numpy()
out["same_seed_same"] = bool(np.array_equal(a, b))

# elastic: one resampling that agrees with _transform when the field is zero
maps = _inverse_affine(tf.constant(np.linspace(-0.2, 0.2, 256, dtype=np.float32)), tf.fill((256,), 0.05),
                       tf.fill((256,), 1.05), tf.fill((256, 2), 1.5), 28, 28)
out["warp_vs_transform"] = float(np.abs(_warp(tf.constant(x), maps, tf.zeros((256, 28, 28, 2))).numpy()
                                        - _transform(tf.constant(x), maps, "BILINEAR").numpy()).max())
moved = np.zeros((1, 28, 28, 2), np.float32)
moved[..., 0] = 3.0  # read 3 px to the right everywhere: the image moves 3 px left
unit_maps = _inverse_affine(tf.zeros((1,)), tf.zeros((1,)), tf.ones((1,)), tf.zeros((1, 2)), 28, 28)
out["field_moves"] = float(np.abs(_warp(tf.constant(x[:1]), unit_maps, tf.constant(moved)).numpy()[0, :, :25]
                                  - x[0, :, 3:]).max())
flat = _gaussian_blur(tf.ones((1, 28, 28, 2)), 5.0).numpy()
out["blur_keeps_level"] = float(np.abs(flat[0, 10:18, 10:18] - 1.0).max())
fields = _gaussian_blur(tf.random.uniform((64, 28, 28, 2), -1.0, 1.0, seed=1), 5.0).numpy() * 34.0
out["field_rms_centre"] = float(np.sqrt((fields[:, 8:20, 8:20] ** 2).mean()))
still_elastic = make_augmenter("elastic", 0, Affine(0, 0, 0, 0), Elastic(alpha=0.0))
out["elastic_identity_error"] = float(np.abs(still_elastic(tf.constant(x)).numpy() - x).max())
bent = make_augmenter("elastic", 0)(tf.constant(x)).numpy()
bent_ratio = bent.sum(axis=(1, 2, 3)) / x.sum(axis=(1, 2, 3))
out["elastic"] = {"shape": list(bent.shape), "ink_ratio_min": float(bent_ratio.min()),
                  "ink_ratio_max": float(bent_ratio.max()), "range": [float(bent.min()), float(bent.max())],
                  "changed": float(np.mean([not np.allclose(p, q, atol=1.0) for p, q in zip(bent, x)]))}
e1 = make_augmenter("elastic", 7)(tf.constant(x[:8])).numpy()
e2 = make_augmenter("elastic", 7)(tf.constant(x[:8])).numpy()
out["elastic_same_seed_same"] = bool(np.array_equal(e1, e2))
out["other_seed_differs"] = not np.array_equal(a, c)
stroked = make_augmenter("stroke", 0)(tf.constant(x)).numpy()
strong = lambda images: (images > 128).sum(axis=(1, 2, 3))  # noqa: E731 - pixels surely ink
change = strong(stroked) / strong(x)
s1 = make_augmenter("stroke", 3)(tf.constant(x[:8])).numpy()
s2 = make_augmenter("stroke", 3)(tf.constant(x[:8])).numpy()
out["stroke"] = {"shape": list(stroked.shape), "range": [float(stroked.min()), float(stroked.max())],
                 "peaks": [float(v) for v in np.unique(stroked.max(axis=(1, 2, 3)).round(3))],
                 "thinner": float(np.mean(change < 0.85)), "thicker": float(np.mean(change > 1.3)),
                 "same_seed_same": bool(np.array_equal(s1, s2))}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def measured(data_dir) -> dict:
    env = {**os.environ, "DIGITQ_DATA_DIR": str(data_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(MEASURE)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_none_is_no_augmenter_and_unknown_kinds_are_refused(measured):
    assert measured["none"] is True
    assert "unknown augmentation 'sepia'" in measured["unknown"]


def test_shift_moves_whole_pixels_without_blurring(measured):
    s = measured["shift"]
    assert s["only_input_levels"]  # every output pixel is an input pixel or background: no interpolation
    assert s["never_more_ink"]  # ink is only moved, or lost where a stroke leaves the canvas
    assert s["moved"] > 200  # of 256 (1 draw in 25 is no shift at all)
    assert s["ink_kept"] > 0.99  # MNIST's empty border keeps nearly all ink in frame


def test_affine_with_zero_ranges_is_the_identity(measured):
    assert measured["identity_error"] < 1e-3


def test_affine_keeps_digits_crisp_and_in_frame(measured):
    a = measured["affine"]
    assert a["shape"] == [256, 28, 28, 1]
    # Zoom changes the ink by at most its area factor (1.1^2); nothing is cut off.
    assert 0.75 < a["ink_ratio_min"] and a["ink_ratio_max"] < 1.3
    # One resampling, not four. Measured on these digits: Keras' four chained Random* layers kept
    # 3% of the saturated stroke pixels and 79% of the edge contrast; one resampling keeps 40% and 95%.
    assert a["saturated_kept"] > 0.25
    assert a["edge_contrast_kept"] > 0.9


def test_inverse_map_rotates_about_the_centre(measured):
    # R(+90 degrees) in (x right, y down) coordinates maps (x, y) = (0, -2) from the centre to
    # (2, 0): the top middle goes to the right middle, and nothing else lights up.
    turned = measured["quarter_turn"]
    assert turned[2][4] == pytest.approx(1.0, abs=1e-4)
    assert sum(map(sum, turned)) == pytest.approx(1.0, abs=1e-4)


def test_the_same_seed_draws_the_same_transforms(measured):
    assert measured["same_seed_same"] and measured["other_seed_differs"]


def test_elastic_warp_is_the_affine_resampling_plus_a_displacement(measured):
    assert measured["warp_vs_transform"] < 1e-3  # zero field: exactly the affine augmenter's resampling
    assert measured["field_moves"] < 1e-3  # a constant field of +3 px shifts the digit by 3 px
    assert measured["elastic_identity_error"] < 1e-3  # no affine range, alpha 0: the identity


def test_elastic_field_is_smooth_and_about_a_pixel(measured):
    assert measured["blur_keeps_level"] < 1e-4  # normalised Gaussian: a constant field stays constant
    assert 0.8 < measured["field_rms_centre"] < 1.5  # alpha 34, sigma 5: RMS ~1.1 px where the ink is


def test_elastic_distorts_every_digit_and_keeps_it_in_frame(measured):
    e = measured["elastic"]
    assert e["shape"] == [256, 28, 28, 1]
    assert e["changed"] == 1.0
    # Stretching and squeezing strokes changes the ink far more than the affine zoom does: on
    # these 256 digits, 5th-95th percentile 0.73-1.25 of the original, extremes 0.60 and 1.77.
    assert 0.5 < e["ink_ratio_min"] and e["ink_ratio_max"] < 2.0
    assert e["range"][0] >= -1e-3 and e["range"][1] <= 255.01  # bilinear weights: no overshoot
    assert measured["elastic_same_seed_same"]


def test_stroke_thins_and_thickens_digits_and_keeps_them_bright(measured):
    """`stroke` (shift plus a random stroke width): some digits come out thinner, some bolder, each
    with its brightest pixel at 255 as the clean-up of an image leaves it."""
    s = measured["stroke"]
    assert s["shape"] == [256, 28, 28, 1] and s["range"][0] >= 0 and s["peaks"] == [255.0]
    assert s["thinner"] > 0.1 and s["thicker"] > 0.25  # w ~ U(-0.6, 1): both kinds, thicker more often
    assert s["same_seed_same"]
