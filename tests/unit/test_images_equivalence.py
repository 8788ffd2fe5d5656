"""digitq.common.images after its speed-up gives bit for bit what it gave before.

`reference_to_mnist` below is the grey-level and geometry code as it was before (Pillow crops,
np.median, np.percentile, argsort, Pillow point and a float canvas), kept here as the oracle.
Compared on thousands of real MNIST test digits written as PNG files (as `digitq predict`
reads them), on MNIST digits scaled, inverted, shaded, compressed and recoloured, and on junk:
random pixels, near-blank images, single rows and columns, odd modes. The fast helpers are also
checked one by one against the NumPy calls they replace. All of this holds for the images that
take the clean path (`images.is_clean`: MNIST-like files); the others go through the photo
clean-up (digitq.common.photos, tests/unit/test_photos.py) and are only checked to give a digit
or "no ink found" here.

MNIST tests read the t10k IDX files from $DIGITQ_DATA_DIR/mnist (default: ../shared/data next
to the repository) and are skipped when the files are missing.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from digitq.common import images, photos
from digitq.common.errors import ImageError
from digitq.common.images import load_image, to_mnist

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("DIGITQ_DATA_DIR") or REPO.parent / "shared" / "data")

MNIST_FILES = 3000
"""MNIST test digits written as PNG files and compared (a third of what the benchmark reads)."""


# --- the reference: the code before the speed-up ------------------------------------------


def reference_to_mnist(image: Image.Image) -> np.ndarray:
    """`to_mnist` with the grey-level and geometry steps as they were before the speed-up.

    Only for images that take the clean path (`images.is_clean`); the stroke-width step that
    came later (`photos.normalise_stroke`, a no-op on MNIST-sized crops) is applied as the
    clean path applies it."""
    image.load()
    image = images._apply_exif_orientation(image)
    ink = _reference_stretch_ink(images._to_gray(image))
    top, bottom, left, right = _reference_find_ink_box(ink)
    digit = _reference_fit_digit_box(photos.normalise_stroke(ink[top : bottom + 1, left : right + 1]))
    return _reference_centre_on_canvas(digit)


def takes_the_clean_path(image: Image.Image) -> bool:
    image = images._apply_exif_orientation(image)
    return images.is_clean(np.asarray(images._to_gray(image)))


def _reference_stretch_ink(gray: Image.Image) -> np.ndarray:
    width, height = gray.size
    edges = [(0, 0, width, 1), (0, height - 1, width, height), (0, 0, 1, height), (width - 1, 0, width, height)]
    border = np.concatenate([np.asarray(gray.crop(box), dtype=np.float64).ravel() for box in edges])
    background = float(np.median(border))
    counts = np.array(gray.histogram(), dtype=np.float64)
    levels = np.arange(256, dtype=np.float64)
    dark_energy = counts @ np.clip(background - levels - images.INK_CONTRAST, 0, None) ** 2
    light_energy = counts @ np.clip(levels - background - images.INK_CONTRAST, 0, None) ** 2
    if dark_energy == 0 and light_energy == 0:
        raise ImageError("no ink found (the image is blank or has too little contrast)")
    if dark_energy > light_energy:
        levels, background = 255 - levels, 255 - background
        border = 255 - border
    noise = float(np.percentile(border, 84.13) - np.median(border))
    black = background + min(max(images.NOISE_SIGMAS * noise, images.MIN_NOISE_MARGIN), images.INK_CONTRAST)
    ink_counts = np.where(levels > background + images.INK_CONTRAST, counts, 0.0)
    order = np.argsort(levels)
    cumulative = np.cumsum(ink_counts[order])
    white = levels[order][np.searchsorted(cumulative, cumulative[-1] * images.INK_LEVEL_PERCENTILE / 100)]
    white = max(white, black + 1)
    table = np.rint(np.clip((levels - black) * (255.0 / (white - black)), 0, 255)).astype(int)
    return np.asarray(gray.point(table.tolist()))


def _reference_find_ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    strong = np.where(ink >= images.STRONG_INK_LEVEL, ink, 0)
    rows = strong.sum(axis=1, dtype=np.int64)
    cols = strong.sum(axis=0, dtype=np.int64)
    allowance = images.CROP_TRIM_FRACTION * int(rows.sum())

    def first_beyond(sums: np.ndarray) -> int:
        return int(np.argmax(np.cumsum(sums) > allowance))

    top, bottom = first_beyond(rows), len(rows) - 1 - first_beyond(rows[::-1])
    left, right = first_beyond(cols), len(cols) - 1 - first_beyond(cols[::-1])
    height, width = ink.shape
    for _ in range(images.FRINGE_PIXELS):
        near_cols = slice(max(left - 1, 0), right + 2)
        near_rows = slice(max(top - 1, 0), bottom + 2)
        if top > 0 and ink[top - 1, near_cols].max() >= images.FRINGE_INK_LEVEL:
            top -= 1
        if bottom < height - 1 and ink[bottom + 1, near_cols].max() >= images.FRINGE_INK_LEVEL:
            bottom += 1
        if left > 0 and ink[near_rows, left - 1].max() >= images.FRINGE_INK_LEVEL:
            left -= 1
        if right < width - 1 and ink[near_rows, right + 1].max() >= images.FRINGE_INK_LEVEL:
            right += 1
    return top, bottom, left, right


def _reference_fit_digit_box(crop: np.ndarray) -> np.ndarray:
    height, width = crop.shape
    scale = images.DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(crop.astype(np.float32))
    if size != (width, height):
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        image = image.resize(size, resample)
    digit = np.clip(np.asarray(image, dtype=np.float32), 0, None)
    peak = float(digit.max())
    if peak <= 0:
        raise ImageError("no ink found (the image is blank or has too little contrast)")
    return digit * (255.0 / peak)


def _reference_centre_on_canvas(digit: np.ndarray) -> np.ndarray:
    height, width = digit.shape
    total = float(digit.sum())
    centre_row = float(digit.sum(axis=1) @ np.arange(height)) / total
    centre_col = float(digit.sum(axis=0) @ np.arange(width)) / total
    top = min(max(math.floor(images.MNIST_CENTRE - centre_row + 0.5), 0), images.MNIST_SIZE - height)
    left = min(max(math.floor(images.MNIST_CENTRE - centre_col + 0.5), 0), images.MNIST_SIZE - width)
    canvas = np.zeros((images.MNIST_SIZE, images.MNIST_SIZE), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


# --- helpers --------------------------------------------------------------------------------


def outcome(convert, image: Image.Image):
    """The digit, or the ImageError message."""
    try:
        return convert(image)
    except ImageError as exc:
        return str(exc)


def assert_same_as_reference(image: Image.Image) -> bool:
    """The clean path gives what the code before the speed-up gave; other images (photos, see
    test_photos.py) give a digit or "no ink found". Returns whether the image took the clean path."""
    if not takes_the_clean_path(image.copy()):
        got = outcome(to_mnist, image.copy())
        assert (isinstance(got, str) and got.startswith("no ink found")) or (got.shape == (28, 28) and got.max() == 255)
        return False
    expected = outcome(reference_to_mnist, image.copy())
    got = outcome(to_mnist, image.copy())
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
    else:
        assert got.dtype == np.uint8 and np.array_equal(got, expected)
    return True


@pytest.fixture(scope="module")
def mnist() -> np.ndarray:
    """The MNIST test images, uint8 [10000, 28, 28]."""
    path = DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz"
    if not path.is_file():
        pytest.skip(f"MNIST test images not found in {DATA_DIR / 'mnist'} (set DIGITQ_DATA_DIR)")
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)


# --- whole images ---------------------------------------------------------------------------


def test_mnist_pngs_as_digitq_predict_reads_them(mnist, tmp_path):
    """The benchmark's files: MNIST test digits as 28x28 grey PNGs, dark ink on white."""
    for index, digit in enumerate(mnist[:MNIST_FILES]):
        path = tmp_path / f"{index:05d}.png"
        Image.fromarray(255 - digit).save(path)
        assert takes_the_clean_path(Image.open(path)), index
        expected = reference_to_mnist(Image.open(path))
        assert np.array_equal(load_image(path), expected), index


def test_mnist_digits_scaled_inverted_shaded_and_recoloured(mnist):
    """Each variant exercises another branch: enlarging and shrinking in `_fit_digit_box`,
    both polarities, a noise margin above the minimum, lossy JPEG, colour and alpha."""
    rng = np.random.default_rng(0)
    clean = 0
    for index, digit in enumerate(mnist[MNIST_FILES : MNIST_FILES + 600]):
        variant = index % 6
        image = Image.fromarray(digit if variant % 2 else 255 - digit)
        if variant in (0, 1):
            size = (int(rng.integers(6, 120)), int(rng.integers(6, 120)))
            image = image.resize(size, Image.Resampling.BICUBIC)
        elif variant == 2:
            shaded = 200 - 0.6 * digit + rng.normal(0, rng.uniform(0, 12), digit.shape)
            image = Image.fromarray(np.clip(shaded, 0, 255).astype(np.uint8)).resize((84, 84))
        elif variant == 3:
            buffer = io.BytesIO()
            image.resize((56, 56)).save(buffer, "JPEG", quality=int(rng.integers(20, 95)))
            image = Image.open(buffer)
        elif variant == 4:
            image = Image.merge("RGB", (image, image.point(lambda v: v // 2), image))
        else:
            image = Image.merge("LA", (Image.new("L", image.size, 0), image))
        clean += assert_same_as_reference(image)
    assert clean >= 550  # only the noisiest shaded variants have a border the clean path refuses


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=48)))
def test_property_junk_pixels(pixels):
    """Arbitrary pixels, hypothesis' favourites included (all zero, one bright pixel, ...)."""
    assert_same_as_reference(Image.fromarray(pixels))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.integers(0, 255), st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_property_near_blank_images_with_specks(width, height, paper, specks, seed):
    """A flat sheet with a few random specks: the edge cases of 'no ink', ties between the
    dark and light side, and crops of one pixel."""
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width), paper, np.uint8)
    pixels[rng.integers(0, height, specks), rng.integers(0, width, specks)] = rng.integers(0, 256, specks)
    assert_same_as_reference(Image.fromarray(pixels))


@pytest.mark.parametrize("mode", ["1", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_junk_in_other_modes(mode):
    rng = np.random.default_rng(1)
    for _ in range(20):
        pixels = rng.integers(0, 256, (int(rng.integers(1, 40)), int(rng.integers(1, 40))), dtype=np.uint8)
        assert_same_as_reference(Image.fromarray(pixels).convert(mode))


def test_images_split_into_many_blocks(monkeypatch, mnist):
    """Blocks of a few rows (as for a 40-megapixel photo) give the same counts and levels."""
    monkeypatch.setattr(images, "BLOCK_PIXELS", 50)
    for digit in mnist[:50]:
        assert_same_as_reference(Image.fromarray(255 - digit).resize((90, 70)))


# --- the helpers against the NumPy calls they replace ----------------------------------------

levels = hnp.arrays(np.uint8, st.integers(1, 3000))


@settings(max_examples=500, deadline=None)
@given(levels, st.sampled_from([84.13, 0.0, 50.0, 99.99, 100.0]) | st.floats(0, 100))
@example(np.array([123, 130], np.uint8), 84.13)  # a + (b - a) t is 1 ulp off numpy's b - (b - a)(1 - t) here
def test_property_sorted_percentile_and_median_are_numpys(values, percent):
    ordered = np.sort(values)
    as_float = values.astype(np.float64)
    assert images._sorted_percentile(ordered, percent) == float(np.percentile(as_float, percent))
    assert images._sorted_median(ordered) == float(np.median(as_float))
    inverted = 255 - ordered[::-1]  # as `_stretch_ink` inverts the border
    assert images._sorted_percentile(inverted, percent) == float(np.percentile(255 - as_float, percent))


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)), st.integers(1, 100))
def test_property_blocks_count_levels_and_apply_tables_like_numpy(pixels, block_pixels):
    table = np.random.default_rng(int(pixels.sum())).integers(0, 256, 256, dtype=np.uint8)
    old = images.BLOCK_PIXELS
    images.BLOCK_PIXELS = block_pixels
    try:
        assert np.array_equal(images._count_levels(pixels), np.bincount(pixels.ravel(), minlength=256))
        assert np.array_equal(images._apply_table(table, pixels), table[pixels])
    finally:
        images.BLOCK_PIXELS = old


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=200), st.floats(0, 10**11))
def test_property_first_beyond_is_argmax_of_the_running_total(sums, allowance):
    assert images._first_beyond(sums, allowance) == int(np.argmax(np.cumsum(sums) > allowance))


# --- load_images (a chunk at once) against load_image (one file at a time) -------------------


def single_outcomes(paths) -> list:
    out = []
    for path in paths:
        try:
            out.append(load_image(path))
        except ImageError as exc:
            out.append(str(exc))
    return out


def assert_batch_matches_single(paths) -> None:
    got = images.load_images(paths)
    expected = single_outcomes(paths)
    assert len(got) == len(expected)
    for path, g, e in zip(paths, got, expected):
        if isinstance(e, str):
            assert isinstance(g, ImageError) and str(g) == e, path
        else:
            assert isinstance(g, np.ndarray) and g.dtype == np.uint8 and np.array_equal(g, e), path


def test_load_images_matches_load_image_on_mnist_pngs_and_junk(mnist, tmp_path):
    """The benchmark's files, with bad files, blank sheets, other sizes and modes in between:
    the stacked steps give every file what the one-file path gives, in order."""
    rng = np.random.default_rng(2)
    paths = []
    for index, digit in enumerate(mnist[:1500]):
        path = tmp_path / f"{index:05d}.png"
        kind = index % 50
        if kind == 7:
            path.write_bytes(b"")  # empty file
        elif kind == 11:
            path.write_text("not an image")
        elif kind == 13:
            Image.new("L", (28, 28), 255).save(path)  # blank: no ink
        elif kind == 17:
            Image.fromarray(255 - digit).resize((90, 70)).save(path)  # too big to stack
        elif kind == 19:
            Image.fromarray(digit).convert("RGBA").save(path)
        elif kind == 23:
            Image.fromarray(255 - digit).resize((40, 40)).save(path)  # another stack
        elif kind == 29:
            buffer = io.BytesIO()
            Image.fromarray(255 - digit).save(buffer, "PNG")
            path.write_bytes(buffer.getvalue()[:60])  # truncated
        elif kind == 31:
            speck = np.full((28, 28), 250, np.uint8)
            speck[rng.integers(0, 28), rng.integers(0, 28)] = int(rng.integers(0, 256))
            Image.fromarray(speck).save(path)
        else:
            Image.fromarray(255 - digit if kind % 2 else digit).save(path)
        paths.append(path)
    paths.append(tmp_path / "missing.png")
    assert_batch_matches_single(paths)


def test_load_images_in_small_stacks(monkeypatch, mnist, tmp_path):
    """Stacks are processed as they fill up (BLOCK_PIXELS in all): many small ones agree too."""
    monkeypatch.setattr(images, "BLOCK_PIXELS", 784 * 3)
    paths = []
    for index, digit in enumerate(mnist[:40]):
        path = tmp_path / f"{index:05d}.png"
        Image.fromarray(255 - digit).save(path)
        paths.append(path)
    assert_batch_matches_single(paths)
    assert images.load_images([]) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(hnp.arrays(np.uint8, st.sampled_from([(1, 1), (1, 5), (5, 1), (3, 4), (6, 6), (28, 28)])),
                min_size=1, max_size=12))
def test_property_load_images_matches_load_image_on_junk(tmp_path, arrays):
    """Arbitrary pixels, several images of each size in one call: the stacked steps agree with
    the one-image steps, blank and one-pixel images included."""
    folder = tmp_path / str(abs(hash(tuple(a.tobytes() for a in arrays))))
    folder.mkdir(exist_ok=True)
    paths = []
    for index, pixels in enumerate(arrays):
        path = folder / f"{index:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    assert_batch_matches_single(paths)
