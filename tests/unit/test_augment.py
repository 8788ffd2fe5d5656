"""The training augmentations: geometry checked on real MNIST digits and on synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from digitq.worker.augment import Affine, _inverse_affine, _transform, make_augmenter  # noqa: E402
from digitq.worker.data import load_mnist  # noqa: E402


@pytest.fixture(scope="module")
def digits(data_dir) -> np.ndarray:
    from digitq.common.settings import Settings

    settings = Settings(home=data_dir, data_dir=data_dir, broker_url=None, result_backend=None)
    return load_mnist(settings)["train_images"][:256, :, :, None].astype(np.float32)


def test_none_is_no_augmenter():
    assert make_augmenter("none", 0) is None


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown augmentation"):
        make_augmenter("sepia", 0)


def test_shift_moves_whole_pixels_without_blurring(digits):
    out = make_augmenter("shift", 0)(tf.constant(digits)).numpy()
    moved = 0
    for before, after in zip(digits[..., 0], out[..., 0]):
        # Every output pixel is an input pixel or background: no interpolated grey levels.
        assert set(np.unique(after)) <= set(np.unique(before)) | {0.0}
        # The ink is only moved: never more of it, less only where a stroke left the canvas.
        assert after.sum() <= before.sum()
        moved += not np.array_equal(after, before)
    assert moved > 200  # most of 256 images moved (1 in 25 draws no shift)
    assert out.sum() > 0.99 * digits.sum()  # MNIST's empty border keeps nearly all ink in frame


def test_affine_with_zero_ranges_is_the_identity(digits):
    still = make_augmenter("affine", 0, Affine(rotation_degrees=0, shear=0, zoom=0, shift_pixels=0))
    np.testing.assert_allclose(still(tf.constant(digits)).numpy(), digits, atol=1e-3)


def test_affine_keeps_digits_crisp_and_in_frame(digits):
    out = make_augmenter("affine", 0)(tf.constant(digits)).numpy()
    assert out.shape == digits.shape
    ink_before, ink_after = digits.sum(axis=(1, 2, 3)), out.sum(axis=(1, 2, 3))
    # Zoom changes the ink by at most its area factor (1.1^2); nothing is cut off.
    assert np.all(ink_after / ink_before > 0.75) and np.all(ink_after / ink_before < 1.3)
    # One resampling, not four. Measured on these 256 digits: Keras' four chained layers kept
    # 3% of the saturated stroke pixels and 79% of the edge contrast; one resampling keeps 40%
    # and 95%.
    assert (out >= 250).sum() > 0.25 * (digits >= 250).sum()
    assert _edge_contrast(out) > 0.9 * _edge_contrast(digits)


def _edge_contrast(images: np.ndarray) -> float:
    """Total absolute difference between neighbouring pixels per unit of ink (blur lowers it)."""
    return float((np.abs(np.diff(images, axis=1)).sum() + np.abs(np.diff(images, axis=2)).sum()) / images.sum())


def test_inverse_map_rotates_about_the_centre():
    """A quarter turn of a 5x5 image with one bright pixel moves it where geometry says."""
    image = np.zeros((1, 5, 5, 1), np.float32)
    image[0, 0, 2, 0] = 1.0  # top middle
    transform = _inverse_affine(tf.constant([np.pi / 2]), tf.constant([0.0]), tf.constant([1.0]),
                                tf.constant([[0.0, 0.0]]), 5, 5)
    out = _transform(tf.constant(image), transform, "BILINEAR").numpy()[0, :, :, 0]
    # R(+90 degrees) in (x right, y down) coordinates maps (x, y) = (0, -2) from the centre to
    # (2, 0): the top middle goes to the right middle.
    assert out[2, 4] == pytest.approx(1.0, abs=1e-4)
    assert out.sum() == pytest.approx(1.0, abs=1e-4)


def test_the_same_seed_draws_the_same_transforms(digits):
    a = make_augmenter("affine", 7)(tf.constant(digits[:8])).numpy()
    b = make_augmenter("affine", 7)(tf.constant(digits[:8])).numpy()
    c = make_augmenter("affine", 8)(tf.constant(digits[:8])).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
