"""Tests for the photo clean-up (digitq.common.photos, through digitq.common.images): real MNIST test
digits written onto synthetic paper (uneven light, shadows, ruled and squared lines, specks, thin
pens), and bench/photos.py's renderer.

Each photo test compares the clean-up's 28x28 digit with the same MNIST digit preprocessed from
its clean 28x28 image: the old clean-up fails each of them (a bright wedge of paper, lines in
the crop, a faint 1-px digit, a crop stretched by specks). MNIST tests read the t10k IDX files
from $DIGITQ_DATA_DIR/mnist (default: ../shared/data next to the repository) and are skipped
when the files are missing.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from digitq.common import images, photos
from digitq.common.errors import ImageError
from digitq.common.images import load_image, load_images, to_mnist
from tests.unit.test_images import best_shifted_correlation, mnist  # noqa: F401 (mnist: the fixture)

REPO = Path(__file__).resolve().parents[2]


def digits_of(mnist, *classes: int) -> list[np.ndarray]:
    pixels, labels = mnist
    return [pixels[int(np.argmax(labels == digit))] for digit in classes]


def ink_coverage(digit: np.ndarray, height: int, pen: float | None = None) -> np.ndarray:
    """The digit enlarged to `height` px as ink coverage 0..1; with `pen`, redrawn as a round pen
    of that width (px) would draw it: thinned to its skeleton, then dilated to the pen's width."""
    enlarged = cv2.resize(digit.astype(np.float32) / 255, (height, height), interpolation=cv2.INTER_CUBIC)
    if pen is None:
        return np.clip(enlarged, 0, 1)
    from skimage.morphology import skeletonize  # the dev extra; bench/photos.py draws its pens this way too

    core = skeletonize(enlarged > 0.5).astype(np.uint8)
    radius = pen / 2
    size = 2 * int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    disk = ((xx**2 + yy**2) <= radius**2 + 0.25).astype(np.uint8)
    return cv2.GaussianBlur(cv2.dilate(core, disk).astype(np.float32), (0, 0), 0.6)


def page_with(coverage: np.ndarray, shape=(360, 340), at=(60, 50), paper=225.0, ink=30.0) -> np.ndarray:
    """A page (float) with the ink laid on it: paper * (1 - coverage) + ink * coverage."""
    page = np.full(shape, paper, np.float32)
    h, w = coverage.shape
    top, left = at
    region = page[top : top + h, left : left + w]
    page[top : top + h, left : left + w] = region * (1 - coverage) + ink * coverage
    return page


def as_image(page: np.ndarray, seed: int = 0, noise: float = 2.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.clip(page + rng.normal(0, noise, page.shape), 0, 255).astype(np.uint8))


def reference(digit: np.ndarray) -> np.ndarray:
    return to_mnist(Image.fromarray(digit))


# --- uneven light ------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "top", "bottom-right"])
def test_strong_light_gradient_and_shadow_leave_no_bright_wedge(mnist, side):
    """Light falls from 100% to 35% across the page, and a soft shadow darkens a third of it."""
    for digit in digits_of(mnist, 2, 3, 7):
        page = page_with(ink_coverage(digit, 220))
        yy, xx = np.mgrid[: page.shape[0], : page.shape[1]].astype(np.float32)
        ramp = {"left": xx / page.shape[1], "top": yy / page.shape[0],
                "bottom-right": 1 - (xx / page.shape[1] + yy / page.shape[0]) / 2}[side]
        light = 1 - 0.65 * ramp
        light *= 1 - 0.4 / (1 + np.exp(-(xx + 0.5 * yy - 330) / 12))  # a soft shadow edge
        got = to_mnist(as_image(page * light))
        assert best_shifted_correlation(got, reference(digit)) > 0.85
        # The wedge: paper taken for ink, bright where the digit has no ink (2 px of slack for the shift).
        support = cv2.dilate((reference(digit) > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert got[~support].sum() < 0.03 * got.sum()


def test_light_ink_on_a_dark_unevenly_lit_board(mnist):
    (digit,) = digits_of(mnist, 4)
    board = np.full((300, 300), 60.0, np.float32)
    coverage = ink_coverage(digit, 200)
    board[50:250, 50:250] = board[50:250, 50:250] * (1 - coverage) + 220 * coverage
    light = np.linspace(1.0, 0.45, 300, dtype=np.float32)[None, :]
    got = to_mnist(as_image(board * light))
    assert best_shifted_correlation(got, reference(digit)) > 0.85


# --- lines and specks ----------------------------------------------------------------------------


def draw_lines(page: np.ndarray, spacing: int, level: float, thick: int, tilt: float, vertical: bool) -> np.ndarray:
    out = page.copy()
    h, w = page.shape
    for y in range(spacing // 2, h, spacing):
        cv2.line(out, (0, y), (w - 1, int(y + tilt * w)), float(level), thick)
    if vertical:
        for x in range(spacing // 3, w, spacing):
            cv2.line(out, (x, 0), (int(x - tilt * h), h - 1), float(level), thick)
    return out


@pytest.mark.parametrize("vertical", [False, True], ids=["ruled", "squared"])
def test_ruled_and_grid_lines_are_removed(mnist, vertical):
    """Dark printed lines (half the ink's contrast, which the old clean-up kept as ink), crossing
    the digit, tilted 2 degrees: none of them survives into the crop (which would shrink the
    digit and add bars)."""
    for digit in digits_of(mnist, 0, 5, 8):
        page = page_with(ink_coverage(digit, 220))
        lined = draw_lines(page, spacing=55 if not vertical else 45, level=110, thick=2, tilt=0.035, vertical=vertical)
        got = to_mnist(as_image(lined))
        assert best_shifted_correlation(got, reference(digit)) > 0.85
        rows, cols = np.nonzero(got > 64)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 >= 19  # the digit fills the 20-px box, no line widened the crop


def test_thin_strokes_along_pale_tilted_grid_lines_stay(mnist):
    """Pale printed grid lines (28% of the light, 3 px, under the ink as on paper) every 62 px,
    straight or tilted 3 degrees, under a 3- or 5-px pen: where a stroke runs along a line it is
    darker than the line and stays (the old clean-up erased it with the line: a 6 lost its loop)."""
    for digit in digits_of(mnist, 3, 6, 8, 9):
        for pen in (3.0, 5.0):
            for tilt in (0.0, 0.05):
                page = page_with(ink_coverage(digit, 220, pen=pen))
                h, w = page.shape
                grid = np.ones(page.shape, np.float32)
                for x in range(10, w, 62):
                    cv2.line(grid, (x, 0), (int(x - tilt * h), h - 1), 0.72, 3)
                for y in range(25, h, 62):
                    cv2.line(grid, (0, y), (w - 1, int(y + tilt * w)), 0.72, 3)
                got = to_mnist(as_image(page * cv2.GaussianBlur(grid, (0, 0), 0.6)))
                unlined = to_mnist(as_image(page))
                assert best_shifted_correlation(got, unlined) > 0.85, (pen, tilt)


def test_small_digit_on_a_large_page_with_specks(mnist):
    """An 80-px digit on a 900x1200 page with 40 specks of dust and a light gradient."""
    rng = np.random.default_rng(3)
    for digit in digits_of(mnist, 1, 6, 9):
        page = page_with(ink_coverage(digit, 80, pen=5), shape=(900, 1200), at=(500, 700))
        for _ in range(40):
            cv2.circle(page, (int(rng.integers(0, 1200)), int(rng.integers(0, 900))), int(rng.integers(1, 3)), 60.0, -1)
        page *= np.linspace(1.0, 0.6, 1200, dtype=np.float32)[None, :]
        got = to_mnist(as_image(page))
        rows, cols = np.nonzero(got > 64)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 >= 18  # no far speck in the crop, shrinking the digit
        assert best_shifted_correlation(got, reference(digit)) > 0.5  # (a 5-px pen at 80 px closes small loops)


# --- stroke width ---------------------------------------------------------------------------------


def mnist_scale_width(digit: np.ndarray) -> float:
    """Stroke width of a 28x28 digit in pixels, measured as `photos.STROKE_RANGE` was measured on MNIST."""
    rows, cols = np.nonzero(digit >= 128)
    crop = digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = 80 / max(h, w)
    big = cv2.resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR)
    return photos.stroke_width(big >= 128) / 4


def test_thin_pen_and_marker_get_mnist_stroke_width(mnist):
    """A 1.5-px fine-liner and a 30-px marker at 240 px height: both come out with MNIST-like
    strokes (MNIST's 5th-95th percentiles: 1.56-3.71 px; the old clean-up gave the fine-liner
    about 0.6 px), and look like the MNIST digit."""
    for digit in digits_of(mnist, 2, 4, 7):
        for pen, shape in ((1.5, (330, 330)), (30, (360, 360))):
            got = to_mnist(as_image(page_with(ink_coverage(digit, 240, pen=pen), shape=shape, at=(45, 45))))
            width = mnist_scale_width(got)
            assert 1.5 <= width <= 3.8, (pen, width)
            assert best_shifted_correlation(got, reference(digit)) > 0.7, pen


def test_a_marker_digit_filling_the_frame_stays_solid(mnist):
    """A 36- or 48-px marker at 240 px on a tight crop, light falling off down the page: the loops
    it fills are blobs a third of the frame across, which the paper estimate must not take for
    paper (the old clean-up kept only their rims: a hollow ring)."""
    for digit in digits_of(mnist, 0, 6, 8, 9):
        for pen in (36.0, 48.0):
            coverage = ink_coverage(digit, 240, pen=pen)
            page = page_with(coverage, shape=(290, 290), at=(25, 25))
            page *= np.linspace(1.0, 0.55, 290, dtype=np.float32)[:, None]
            got = to_mnist(as_image(page))
            drawn = to_mnist(Image.fromarray((255 - coverage * 255).astype(np.uint8)))
            assert best_shifted_correlation(got, drawn) > 0.85, pen


def test_thin_pen_on_a_clean_scan_is_thickened_too(mnist):
    """A clean scan (even white paper) takes the clean path; its strokes are still normalised."""
    (digit,) = digits_of(mnist, 3)
    pixels = np.clip(page_with(ink_coverage(digit, 200, pen=2), shape=(260, 260), at=(30, 30), paper=250, ink=20), 0, 255)
    assert images.is_clean(pixels.astype(np.uint8))
    got = to_mnist(Image.fromarray(pixels.astype(np.uint8)))
    assert mnist_scale_width(got) >= 1.5


def test_mnist_strokes_are_left_alone(mnist):
    """MNIST digits enlarged 5x (crops over STROKE_MIN_SIDE) keep their strokes, except the few
    outside STROKE_RANGE (MNIST's thinnest 2-3% and thickest 1%)."""
    pixels, _ = mnist
    changed = 0
    for digit in pixels[:200]:
        rows, cols = np.nonzero(digit)
        crop = digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        crop = cv2.resize(crop, (crop.shape[1] * 5, crop.shape[0] * 5), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        changed += photos.normalise_stroke(crop) is not crop
    assert changed <= 8


# --- pages without a digit --------------------------------------------------------------------------


@pytest.mark.parametrize("extra", ["nothing", "specks", "lines", "shadow"])
def test_a_page_without_a_digit_is_no_ink_found(extra):
    rng = np.random.default_rng(5)
    page = np.full((700, 900), 215.0, np.float32)
    if extra == "specks":
        for _ in range(30):
            cv2.circle(page, (int(rng.integers(0, 900)), int(rng.integers(0, 700))), 1, 80.0, -1)
    elif extra == "lines":
        page = draw_lines(page, 40, 150, 2, 0.02, vertical=True)
    elif extra == "shadow":
        yy, xx = np.mgrid[:700, :900].astype(np.float32)
        page *= 1 - 0.45 / (1 + np.exp(-(xx - yy - 200) / 25))
    page *= np.linspace(1.0, 0.55, 900, dtype=np.float32)[None, :]  # the light falls off across the page
    with pytest.raises(ImageError, match="^no ink found"):
        to_mnist(as_image(page, noise=3))


# --- limits, batch path, fast path -------------------------------------------------------------------


def test_40_megapixel_photo_costs_less_memory_than_its_grey_image():
    """The clean-up of a 40 Mpx photo's grey levels (40 MB) allocates well under another 40 MB
    (the old clean-up's stretched copy alone was 40 MB)."""
    gray = np.full((5000, 8000), 200, np.uint8)
    gray[2000:3000, 3500:3600] = 30  # a "1"
    tracemalloc.start()
    try:
        digit = images._digit_from_gray(gray)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digit.max() == 255
    assert peak < 20_000_000, peak


def test_load_images_matches_load_image_on_photos_and_clean_files(mnist, tmp_path):
    """Small photos (not clean: a gradient reaches the border) in the same stack as clean MNIST
    PNGs: load_images gives each what load_image gives."""
    pixels, _ = mnist
    paths = []
    for index, digit in enumerate(pixels[:30]):
        path = tmp_path / f"{index:03d}.png"
        if index % 3:
            Image.fromarray(255 - digit).save(path)
        else:
            shaded = (255 - digit.astype(np.float32) * 0.8) * np.linspace(1.0, 0.5, 28, dtype=np.float32)[None, :]
            Image.fromarray(shaded.astype(np.uint8)).save(path)
        paths.append(path)
    batch = load_images(paths)
    for path, got in zip(paths, batch):
        expected = load_image(path)
        assert isinstance(got, np.ndarray) and np.array_equal(got, expected), path


def test_mnist_pngs_take_the_clean_path(mnist):
    pixels, _ = mnist
    assert all(images.is_clean(255 - digit) for digit in pixels[:500])


# --- the benchmark's renderer -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer():
    pytest.importorskip("skimage")
    spec = importlib.util.spec_from_file_location("bench_photos", REPO / "bench" / "photos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_photos"] = module
    spec.loader.exec_module(module)
    return module


def test_renderer_is_deterministic_and_every_style_decodes(mnist, renderer):
    pixels, _ = mnist
    for style_index, style in enumerate(renderer.STYLES):
        seed = renderer.seed_of(style_index, 7, 0)
        first, ext = renderer.render(pixels[7], style, seed)
        again, _ = renderer.render(pixels[7], style, seed)
        other, _ = renderer.render(pixels[7], style, renderer.seed_of(style_index, 7, 1))
        assert first == again, style.name
        assert first != other, style.name
        image = Image.open(io.BytesIO(first))
        assert image.format == ("PNG" if ext == "png" else "JPEG")
        assert min(image.size) >= 60


def test_rendered_photos_come_out_as_their_digit(mnist, renderer):
    """One photo per style of a clear MNIST digit: the clean-up gives something close to it."""
    pixels, labels = mnist
    (digit,) = digits_of(mnist, 3)
    index = int(np.argmax(labels == 3))
    for style_index, style in enumerate(renderer.STYLES):
        data, _ = renderer.render(digit, style, renderer.seed_of(style_index, index, 0))
        got = images.decode_image_bytes(data)
        assert best_shifted_correlation(got, reference(digit)) > 0.6, style.name
