"""`digitq predict --number` and the flag column through the real CLI, a real redis-server and the
session's real worker and small model (conftest `trained_model`), on PNG files of real MNIST test
digits written side by side, some touching, and a blank page.

Guarantees: each file is one row; a number's digits are split out (four digits apart: four),
and read right even by the session's 1-epoch model; a blank page is a row flagged
`blank`, counted classified, not an error, and the run exits 0."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import mnist_test, ok
from tests.processes import run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]

NUMBERS = {"a.png": ([0, 1, 2, 3], [4, 5, 3]), "b.png": ([4, 7, 11], [3, -2]), "c.png": ([18, 61, 8, 12, 21], [6, -1, 4, 5])}
"""File: (MNIST test indexes, gaps in px between them, negative where they overlap and touch)."""


def row_png(digits: list[np.ndarray], gaps: list[int]) -> Image.Image:
    crops = []
    for d in digits:
        rows, cols = np.flatnonzero(d.max(axis=1)), np.flatnonzero(d.max(axis=0))
        crops.append(d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    canvas = np.zeros((36, sum(c.shape[1] for c in crops) + sum(gaps) + 8), np.uint8)
    x = 4
    for crop, gap in zip(crops, [0] + gaps):
        x += gap
        region = canvas[4 : 4 + crop.shape[0], x : x + crop.shape[1]]
        np.maximum(region, crop, out=region)
        x += crop.shape[1]
    return Image.fromarray(255 - canvas).resize((canvas.shape[1] * 3, 36 * 3), Image.Resampling.BICUBIC)


def test_numbers_and_a_blank_page_through_a_real_worker(trained_model, client_env, data_dir, tmp_path):
    images, labels = mnist_test(data_dir)
    truth = {}
    for name, (picks, gaps) in NUMBERS.items():
        row_png([images[i] for i in picks], gaps).save(tmp_path / name)
        truth[name] = "".join(str(int(labels[i])) for i in picks)
    Image.new("L", (300, 120), 245).save(tmp_path / "blank.png")
    (tmp_path / "notes.txt").write_text("not an image")

    proc = ok(run_cli(["predict", str(tmp_path), "--model", trained_model.name, "--number", "-o", "-",
                       "--min-confidence", "0"], client_env))
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(proc.stdout, newline=""))}
    assert list(next(csv.reader(io.StringIO(proc.stdout)))) == ["path", "number", "confidence", "digit_confidences",
                                                                "flag", "error"]
    assert set(rows) == {*NUMBERS, "blank.png", "notes.txt"}
    assert rows["blank.png"]["flag"] == "blank" and rows["blank.png"]["error"] == "" and rows["blank.png"]["number"] == ""
    assert "not an image file" in rows["notes.txt"]["error"]
    for name, number in truth.items():
        got = rows[name]
        confidences = [float(c) for c in got["digit_confidences"].split()]
        assert len(confidences) == len(got["number"]) >= 2, got  # split, whatever the small model reads
        assert float(got["confidence"]) == pytest.approx(np.prod(confidences), abs=1e-3)
    assert len(rows["a.png"]["number"]) == 4, rows["a.png"]  # four digits apart: four digits
    assert rows["a.png"]["number"] == truth["a.png"] or rows["b.png"]["number"] == truth["b.png"], (rows, truth)
    assert "4 classified (1 flagged), 1 failed" in proc.stderr

    # One digit per image: the blank page is a flagged row there too, and the JSON rows carry the flag.
    out = tmp_path / "digits.jsonl"
    ok(run_cli(["predict", str(tmp_path), "--model", trained_model.name, "--format", "json", "-o", str(out)],
               client_env))
    digits = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert digits["blank.png"]["flag"] == "blank" and digits["blank.png"]["digit"] is None
    assert digits["blank.png"]["error"] is None
    assert digits["a.png"]["flag"] == "not-one-digit"  # four digits side by side: no single digit
