"""The predict contact sheet (digitq.client.gallery): Pillow and NumPy only, no worker, no TensorFlow."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from digitq.client.gallery import (CELL_H, CELL_W, DEFAULT_COLUMNS, DIGIT_PX, ERROR_FILL, FOOTER_H, LEGEND_H,
                                   LEGEND_MIN_W, PAD, ContactSheet, confidence_label, sheet_size)


def digit(seed: int) -> np.ndarray:
    """A 28 x 28 MNIST-style stroke: white ink on black, different per seed."""
    img = np.zeros((28, 28), np.uint8)
    rng = np.random.default_rng(seed)
    col = int(rng.integers(8, 20))
    img[4:24, col - 2:col + 2] = 255
    img[4:8, col - 6:col + 2] = 200
    return img


def cell_box(i: int, cols: int) -> tuple[int, int, int, int]:
    """The digit square of cell i (left, top, right, bottom; exclusive) in a sheet of `cols` columns."""
    x0, y0 = (i % cols) * CELL_W + PAD, (i // cols) * CELL_H + PAD
    return x0, y0, x0 + DIGIT_PX, y0 + DIGIT_PX


@pytest.mark.parametrize("n", [1, 7, 20, 21, 45])
def test_sheet_is_a_png_of_the_expected_size(tmp_path, n):
    sheet = ContactSheet()
    for i in range(n):
        sheet.add(digit(i), f"img{i:03d}.png", i % 10, 0.95, None)
    path = sheet.save(tmp_path / "sheet.png")
    cols = min(n, DEFAULT_COLUMNS)
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (max(cols * CELL_W, LEGEND_MIN_W), math.ceil(n / cols) * CELL_H + LEGEND_H) == sheet_size(n)
        assert json.loads(im.text["digitq:cells"]) == [f"img{i:03d}.png" for i in range(n)]
        assert np.asarray(im.convert("L")).std() > 0
    assert not list(tmp_path.glob(".*partial")), "the temporary file is renamed, not left behind"


def test_each_digit_is_drawn_2x_pixel_for_pixel_with_a_label_under_it(tmp_path):
    sheet = ContactSheet(columns=4)
    pixels = [digit(i) for i in range(6)]
    for i, p in enumerate(pixels):
        sheet.add(p, f"{i}.png", i, 0.5 + i / 20, None)
    with Image.open(sheet.save(tmp_path / "s.png")) as im:
        rgb = np.asarray(im.convert("RGB"))
    for i, p in enumerate(pixels):
        left, top, right, bottom = cell_box(i, 4)
        shown = rgb[top:bottom, left:right, 0]
        assert np.array_equal(shown, np.kron(p, np.ones((2, 2), np.uint8))), f"cell {i}"
        label = rgb[bottom + PAD:bottom + PAD + 14, left - PAD:right + PAD]
        assert label.max() > 150, f"cell {i} has a visible label"


def test_errored_files_are_grey_cells_marked_error(tmp_path):
    sheet = ContactSheet(columns=3)
    sheet.add(digit(0), "a.png", 1, 0.99, None)
    sheet.add(None, "b.txt", None, None, "not an image file")
    sheet.add(digit(2), "c.png", 7, 0.30, None)
    with Image.open(sheet.save(tmp_path / "s.png")) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    left, top, right, bottom = cell_box(1, 3)
    square = rgb[top:bottom, left:right]
    grey = np.all(square == ERROR_FILL, axis=-1)
    assert grey.mean() > 0.8, "the error cell is mostly grey"
    assert (~grey).sum() > 10, "with the word 'error' drawn on it"
    assert (square.max(axis=-1) < 100).any(), "in dark ink"
    ok_left, ok_top, ok_right, ok_bottom = cell_box(0, 3)
    assert not np.all(rgb[ok_top:ok_bottom, ok_left:ok_right] == ERROR_FILL, axis=-1).any()


def test_low_confidence_labels_are_coloured(tmp_path):
    sheet = ContactSheet(columns=2)
    sheet.add(digit(0), "sure.png", 3, 0.99, None)
    sheet.add(digit(1), "doubt.png", 5, 0.2, None)
    with Image.open(sheet.save(tmp_path / "s.png")) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    label_rows = slice(PAD + DIGIT_PX + PAD, CELL_H)
    sure, doubt = rgb[label_rows, :CELL_W], rgb[label_rows, CELL_W:]
    assert (np.abs(sure[..., 0] - sure[..., 2]) < 20).all(), "a confident label is white/grey"
    assert ((doubt[..., 0] - doubt[..., 2]) > 80).any(), "a doubtful one is red"


def test_the_limit_keeps_the_first_images_and_counts_the_rest(tmp_path):
    sheet = ContactSheet(limit=5, columns=5)
    added = [sheet.add(digit(i), f"{i}.png", i, 0.9, None) for i in range(8)]
    assert added == [True] * 5 + [False] * 3
    assert len(sheet) == 5 and sheet.left_out == 3
    with Image.open(sheet.save(tmp_path / "s.png")) as im:
        assert im.size == (5 * CELL_W, CELL_H + FOOTER_H + LEGEND_H) == sheet_size(5, 5, more=True)
        assert json.loads(im.text["digitq:cells"]) == [f"{i}.png" for i in range(5)]
        footer = np.asarray(im.convert("L"))[CELL_H:CELL_H + FOOTER_H]
    assert footer.max() > 150, "the '... more not shown' line is drawn"


def test_default_limit_is_400(tmp_path):
    sheet = ContactSheet()
    one = digit(0)
    for i in range(401):
        sheet.add(one, f"{i}.png", 0, 0.9, None)
    assert len(sheet) == 400 and sheet.left_out == 1
    assert sheet.render().size == (20 * CELL_W, 20 * CELL_H + FOOTER_H + LEGEND_H)


def test_bad_input_is_refused(tmp_path):
    sheet = ContactSheet()
    with pytest.raises(ValueError, match="holds no images"):
        sheet.save(tmp_path / "empty.png")
    with pytest.raises(ValueError, match="28 x 28"):
        sheet.add(np.zeros((32, 32), np.uint8), "big.png", 1, 0.9, None)
    sheet.add(np.zeros(784, np.uint8), "flat.png", 1, 0.9, None)  # 784 flat bytes are fine
    sheet.add(None, "nopix.png", 1, 0.9, None)  # no pixels and no error: drawn as an error cell
    assert sheet.cells[1].error
    with pytest.raises(ValueError):
        ContactSheet(limit=0)



def test_labels_round_down_so_the_number_agrees_with_the_colour():
    """Issue 17, item 8: 0.897 was shown as a yellow "90%"; "1 88%" read as 188%."""
    assert confidence_label(1, 0.88) == "1 (88%)"
    assert confidence_label(7, 0.897) == "7 (89%)"
    assert confidence_label(7, 0.9) == "7 (90%)" and confidence_label(0, 1.0) == "0 (100%)"


def test_an_error_cell_names_its_file_and_reason_and_the_legend_is_drawn(tmp_path):
    sheet = ContactSheet(columns=2)
    sheet.add(digit(0), "a.png", 1, 0.99, None)
    sheet.add(None, "notes.txt", None, None, "not an image file")
    with Image.open(sheet.save(tmp_path / "s.png")) as im:
        grey = np.asarray(im.convert("L")).astype(int)
    left, top, right, bottom = cell_box(1, 2)
    assert (grey[top + 18:bottom, left:right] > 200).sum() > 20, "the reason is written in the cell"
    assert (grey[bottom + PAD:bottom + PAD + 14, left - PAD:right + PAD] > 120).sum() > 10, "the file name under it"
    legend = grey[-LEGEND_H:]
    assert (legend > 150).sum() > 100, "the legend is drawn under the grid"
