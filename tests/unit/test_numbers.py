"""Splitting a written number into digits (digitq.common.numbers) and the shape test of the flag
(digitq.common.doubt), on real MNIST test digits composed into rows (bench/written_numbers.py's
`compose`: MNIST's scale, digits apart or touching) and on photos of such rows (bench/photos.py's
renderer). Each piece is checked against the digit it came from: the same digit, cleaned up
alone, correlates with it."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitq.common import doubt, images
from digitq.common.errors import NoInkError
from digitq.common.numbers import load_number, number_from_gray, split_row
from tests.unit.test_images import best_shifted_correlation, mnist  # noqa: F401 (mnist: the fixture)

REPO = Path(__file__).resolve().parents[2]


def _bench(name: str):
    pytest.importorskip("skimage")
    if f"bench_{name}" in sys.modules:
        return sys.modules[f"bench_{name}"]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module
    spec.loader.exec_module(module)  # bench/written_numbers.py imports bench/photos.py as `photos`
    return module


def row_of(digits: list[np.ndarray], gaps: list[int], drift: list[int] | None = None) -> np.ndarray:
    """MNIST digits (ink bright) side by side, cropped to their ink, `gaps` px apart (negative:
    overlapping columns), each moved down by `drift` px; dark on white, uint8, 4-px margin."""
    crops = []
    for d in digits:
        rows, cols = np.flatnonzero(d.max(axis=1)), np.flatnonzero(d.max(axis=0))
        crops.append(d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    drift = drift or [0] * len(digits)
    width = sum(c.shape[1] for c in crops) + sum(gaps) + 8
    canvas = np.zeros((28 + 8 + max(drift), width), np.uint8)
    x = 4
    for crop, gap, dy in zip(crops, [0] + gaps, drift):
        x += gap
        region = canvas[4 + dy : 4 + dy + crop.shape[0], x : x + crop.shape[1]]
        np.maximum(region, crop, out=region)
        x += crop.shape[1]
    return 255 - canvas


def first_reading(glyphs: list[list[np.ndarray]]) -> np.ndarray:
    return np.concatenate([readings[0] for readings in glyphs])


def assert_same_digits(found: np.ndarray, digits: list[np.ndarray]) -> None:
    assert len(found) == len(digits)
    for got, digit in zip(found, digits):
        alone = images.to_mnist(Image.fromarray(255 - digit))
        assert best_shifted_correlation(got, alone) > 0.8


def test_digits_apart_with_a_drifting_baseline_come_back_in_order(mnist):
    pixels, labels = mnist
    digits = [pixels[i] for i in (0, 1, 2, 3, 4, 7)]  # 7 2 1 0 4 9
    gray = row_of(digits, gaps=[3, 6, 2, 5, 4], drift=[0, 2, 4, 3, 1, 0])
    glyphs = number_from_gray(gray)
    assert [len(readings) >= 1 for readings in glyphs] == [True] * 6
    assert_same_digits(first_reading(glyphs), digits)


def test_a_touching_pair_is_read_whole_and_cut_and_its_cut_comes_first(mnist):
    pixels, labels = mnist
    two, zero = pixels[1], pixels[3]  # a 2 and a 0, overlapping by 3 columns: one connected glyph
    gray = row_of([two, zero], gaps=[-3])
    glyphs = number_from_gray(gray)
    assert len(glyphs) == 1  # one glyph ...
    sizes = [len(reading) for reading in glyphs[0]]
    assert sizes[0] == 2 and 1 in sizes  # ... likeliest as two digits, also read as one
    assert_same_digits(glyphs[0][0], [two, zero])


def test_a_narrow_digit_is_never_cut(mnist):
    pixels, labels = mnist
    one = pixels[2]  # a 1
    glyphs = number_from_gray(row_of([one], gaps=[]))
    assert [[len(r) for r in readings] for readings in glyphs] == [[1]]


def test_no_reading_cuts_off_a_stroke_end_as_a_digit(mnist):
    """A wide seven (its bar 1.6x its height, the stem a third of the way along) beside a 1: the
    glyph is too wide to be read whole beside other digits, but each cut would leave a piece of
    the bar alone, a few pixels tall. Such readings are none; the seven stays one digit."""
    pixels, _ = mnist
    one = 255 - pixels[2]
    seven = np.full((28, 45), 255, np.uint8)
    seven[2:6, 1:44] = 0  # the bar
    seven[2:27, 14:18] = 0  # the stem
    gray = np.full((36, 4 + 28 + 6 + 45 + 4), 255, np.uint8)
    gray[4:32, 4:32] = one
    gray[4:32, 38:83] = np.minimum(gray[4:32, 38:83], seven)
    glyphs = number_from_gray(gray)
    assert len(glyphs) == 2
    readings = glyphs[1]
    assert readings
    for reading in readings:
        if len(reading) > 1:
            for digit in reading:
                rows = np.flatnonzero(digit.max(axis=1) > 64)
                assert rows[-1] - rows[0] + 1 >= 10, "a piece of the bar alone, scaled up"
    assert [len(r) for r in readings] == [1]


def test_blank_and_empty_rows_are_no_ink(tmp_path):
    with pytest.raises(NoInkError):
        split_row(np.zeros((20, 50), np.float32))
    path = tmp_path / "blank.png"
    Image.new("L", (200, 60), 240).save(path)
    with pytest.raises(NoInkError, match="^no ink found"):
        load_number(path)


def test_a_photographed_number_splits_into_its_digits(mnist):
    pixels, labels = mnist
    photos = _bench("photos")
    numbers = _bench("written_numbers")
    rng = np.random.default_rng([0, 4, 3])
    picks = [0, 1, 2, 3]
    strip, _ = numbers.compose([pixels[k] for k in picks], rng)
    style = next(s for s in photos.STYLES if s.name == "photo-ruled")
    data, _ = photos.render(strip, style, seed=5)
    gray = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert len(first_reading(number_from_gray(gray))) == 4


def test_the_shape_test_passes_mnist_digits_and_flags_rows_and_filled_shapes(mnist):
    pixels, labels = mnist
    flags = doubt.shape_flags(pixels[:2000])
    assert flags.count(doubt.NOT_ONE_DIGIT) <= 0.01 * 2000  # MNIST's own digits pass
    several = images.to_mnist(Image.fromarray(row_of([pixels[i] for i in (0, 1, 2)], gaps=[4, 4])))
    blob = np.zeros((28, 28), np.uint8)
    blob[6:22, 6:22] = 255  # a filled square, as the clean-up would centre it
    assert doubt.shape_flags(np.stack([several, blob])) == [doubt.NOT_ONE_DIGIT] * 2


def test_flag_for_orders_blank_shape_unsure():
    assert doubt.flag_for(None, "", 0.5) == doubt.BLANK
    assert doubt.flag_for(0.99, doubt.NOT_ONE_DIGIT, 0.5) == doubt.NOT_ONE_DIGIT
    assert doubt.flag_for(0.49, "", 0.5) == doubt.UNSURE
    assert doubt.flag_for(0.5, "", 0.5) == ""
    assert doubt.is_blank_message(str(NoInkError("no ink found (only specks, lines or shading; no digit)")))
