"""`predict --number` and `--min-confidence` against a stand-in Client (options, refusals before
any work, the summary line at 80 columns), and the rows they write: the flag column, the number
rows (CSV and JSON lines) and how a file's candidate digits are joined into its number."""

from __future__ import annotations

import json

import pytest

from digitq.client.numbers import NUMBER_COLUMNS, NumberRow, compose_numbers
from digitq.client.predict import CSV_COLUMNS, Row, RowWriter
from digitq.common.schemas import PredictSummary
from tests.unit.cli_fake import JOB, cli  # noqa: F401  (the fixture)


def test_number_and_min_confidence_reach_the_client_and_the_summary_counts_flagged_rows(cli, tmp_path):
    cli.client.summary = PredictSummary(job_id=JOB, classified=120, failed=3, output=str(tmp_path / "n.csv"),
                                        seconds=2.0, images_per_second=61.5, flagged=17)
    r = cli("predict", str(tmp_path), "--number", "--min-confidence", "0.7", "-o", str(tmp_path / "n.csv"),
            "--jobs", "1")
    assert r.exit_code == 0, r.output
    kw = cli.client.args_of("predict")[1]
    assert kw["number"] is True and kw["min_confidence"] == 0.7
    last = r.stderr.splitlines()[-1]
    assert last == f"120 classified (17 flagged), 3 failed -> {tmp_path / 'n.csv'} (62 images/s)"
    assert all(len(line) <= 80 for line in r.stderr.splitlines() if str(tmp_path) not in line)


def test_defaults_are_digits_and_the_documented_confidence(cli, tmp_path):
    from digitq.common.doubt import DEFAULT_MIN_CONFIDENCE

    r = cli("predict", str(tmp_path), "--jobs", "1")
    assert r.exit_code == 0, r.output
    kw = cli.client.args_of("predict")[1]
    assert kw["number"] is False and kw["min_confidence"] == DEFAULT_MIN_CONFIDENCE
    assert "flagged" not in r.stderr  # nothing flagged: the line is as before


@pytest.mark.parametrize("args, message", [
    (["--min-confidence", "1.5"], "--min-confidence must be between 0 and 1, got 1.5"),
    (["--min-confidence", "-0.1"], "--min-confidence must be between 0 and 1, got -0.1"),
    (["--number", "--remote"], "--number splits each image into digits here; with --remote the workers read them"),
    (["--number", "--gallery", "s.png"], "--gallery draws single digits; leave it out with --number"),
])
def test_bad_number_options_are_one_line_before_any_client(cli, tmp_path, args, message):
    r = cli("predict", str(tmp_path), *args)
    assert r.exit_code == 2 and r.stderr == f"error: {message}\n"
    assert cli.client.calls == []


def probs(digit: int, confidence: float) -> list[float]:
    rest = (1 - confidence) / 9
    return [confidence if d == digit else rest for d in range(10)]


def test_a_file_s_readings_are_joined_by_the_likeliest_cut():
    # "20" written touching: glyph 0 read whole (as a low-confidence 8) or cut in two (2, 0);
    # glyph 1, a 6, read whole only. The cut wins: 0.9 x 0.9 > 0.4.
    rows = [Row(("a.png", 0, 0, 0), probs(8, 0.4), None, flag="unsure"),
            Row(("a.png", 0, 1, 0), probs(2, 0.9), None), Row(("a.png", 0, 1, 1), probs(0, 0.9), None),
            Row(("a.png", 1, 0, 0), probs(6, 0.8), None),
            Row(("b.png", None, 0, 0), None, None, flag="blank"),
            Row(("c.png", None, 0, 0), None, "truncated or corrupt image"),
            Row(("d.png", 0, 0, 0), probs(7, 0.95), None, flag="not-one-digit")]
    got = list(compose_numbers(rows))
    assert [(n.path, n.number, n.flag, n.error) for n in got] == [
        ("a.png", "206", "", None), ("b.png", None, "blank", None), ("c.png", None, "", "truncated or corrupt image"),
        ("d.png", "7", "not-one-digit", None)]
    assert got[0].confidences == pytest.approx([0.9, 0.9, 0.8]) and got[0].confidence == pytest.approx(0.648)


def test_number_rows_in_csv_and_json(tmp_path):
    rows = [NumberRow("form.jpg", "2026", [0.91, 0.9, 0.88, 0.93]), NumberRow("blank.png", flag="blank"),
            NumberRow("bad.png", error="not an image file")]
    for fmt in ("csv", "json"):
        out = tmp_path / f"n.{fmt}"
        writer = RowWriter(str(out), fmt, NUMBER_COLUMNS)
        for row in rows:
            writer.write(row)
        writer.close()
        assert (writer.classified, writer.failed, writer.flagged) == (2, 1, 1)
        lines = out.read_text().splitlines()
        if fmt == "csv":
            assert lines == ["path,number,confidence,digit_confidences,flag,error",
                             "form.jpg,2026,0.67027,0.9100 0.9000 0.8800 0.9300,,",
                             "blank.png,,,,blank,", "bad.png,,,,,not an image file"]
            assert all(len(line) <= 80 for line in lines)
        else:
            first = json.loads(lines[0])
            assert first == {"path": "form.jpg", "number": "2026", "confidence": 0.67027,
                             "digit_confidences": [0.91, 0.9, 0.88, 0.93], "flag": None, "error": None}
            assert json.loads(lines[1])["flag"] == "blank" and json.loads(lines[1])["number"] is None


def test_the_flag_column_sits_after_the_confidence():
    assert CSV_COLUMNS[:5] == ["path", "digit", "confidence", "flag", "error"]
    assert Row("x.png", probs(3, 0.45), None, flag="unsure").values()[:5] == ["x.png", 3, 0.45, "unsure", ""]
    assert Row("b.png", None, None, flag="blank").values()[:5] == ["b.png", "", "", "blank", ""]
    assert Row("b.png", None, None, flag="blank").classified


def test_the_pipeline_flags_a_blank_page_and_splits_a_number(tmp_path):
    """predict_folder with the stand-in queue of test_predict_client: a blank page is a row flagged
    `blank` (no error), a file that is no image stays an error, and with number=True a row of three
    strokes apart comes back as one row of three digits."""
    import numpy as np
    from PIL import Image

    from digitq.client.predict import predict_folder
    from tests.unit.test_predict_client import FakeClient

    Image.new("L", (120, 80), 250).save(tmp_path / "a-blank.png")
    digit = np.full((28, 28), 255, np.uint8)
    digit[4:24, 12:16] = 0
    Image.fromarray(digit).save(tmp_path / "b-one.png")
    (tmp_path / "c-notes.png").write_text("not an image")
    row = np.full((40, 90), 255, np.uint8)
    for x in (10, 40, 70):
        row[8:32, x : x + 4] = 0
    Image.fromarray(row).save(tmp_path / "d-111.png")

    rows = {r.path: r for r in predict_folder(FakeClient(), str(tmp_path), "digits", batch_id="b", processes=1,
                                              min_confidence=0.5)}
    assert rows["a-blank.png"].flag == "blank" and rows["a-blank.png"].error is None
    assert rows["a-blank.png"].probs is None and rows["a-blank.png"].classified
    assert "not an image" in rows["c-notes.png"].error and not rows["c-notes.png"].classified
    assert rows["b-one.png"].flag == "unsure"  # the stand-in's probabilities are all 0.1 or less

    numbers = list(compose_numbers(predict_folder(FakeClient(), str(tmp_path), "digits", batch_id="n", processes=1,
                                                  number=True)))
    got = {n.path: n for n in numbers}
    assert [n.path for n in numbers] == ["a-blank.png", "b-one.png", "c-notes.png", "d-111.png"]
    assert got["a-blank.png"].flag == "blank" and got["c-notes.png"].error
    assert len(got["d-111.png"].number) == 3 and len(got["b-one.png"].number) == 1
