"""The report's plots from synthetic data (matplotlib only, no TensorFlow), and the client's side of
`digitq report` (checking the target, writing the returned files)."""

from __future__ import annotations

import base64
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from digitq.client.report import check_report_target, write_report_files
from digitq.common.errors import DigitqError, InvalidRequest

pytest.importorskip("matplotlib")

from digitq.worker import report  # noqa: E402  (after the skip: the worker extra brings matplotlib)


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return np.asarray(im.convert("L")).astype(int)


def history(epochs: int, resumed_at: int | None = None, validation: bool = True) -> list[dict]:
    out = []
    for e in range(1, epochs + 1):
        entry = {"epoch": e, "loss": 1 / e, "accuracy": 1 - 0.5 / e, "seconds": 1.0, "images_per_second": 1000.0}
        if validation:
            entry.update(val_loss=1.2 / e, val_accuracy=1 - 0.6 / e)
        if e == resumed_at:
            entry["resumed"] = True
        out.append(entry)
    return out


@pytest.mark.parametrize("hist", [history(3), history(1), history(3, resumed_at=2), history(40, validation=False), []],
                         ids=["3-epochs", "1-epoch", "resumed", "40-epochs-no-validation", "no-history"])
def test_curves_are_1000x400_and_drawn(tmp_path, hist):
    path = report.plot_curves(hist, tmp_path / "curves.png", "title")
    a = pixels(path)
    assert a.shape == (400, 1000) and a.std() > 0
    assert not list(tmp_path.glob(".*partial"))


def test_a_resumed_epoch_changes_the_curves(tmp_path):
    plain = pixels(report.plot_curves(history(3), tmp_path / "a.png", "t"))
    marked = pixels(report.plot_curves(history(3, resumed_at=2), tmp_path / "b.png", "t"))
    assert (plain != marked).sum() > 200, "the resume line and its legend entry are drawn"


def test_an_ensemble_gets_one_line_per_model(tmp_path):
    members = [{**e, "member": m} for m in (1, 2, 3) for e in history(4, resumed_at=3 if m == 2 else None)]
    one = pixels(report.plot_curves(history(4), tmp_path / "one.png", "t"))
    three = pixels(report.plot_curves(members, tmp_path / "three.png", "t"))
    assert three.shape == (400, 1000) and (one != three).sum() > 200
    assert [m for m, _ in report._by_member(members)] == [1, 2, 3]
    assert report._by_member(history(2)) == [(None, history(2))]


def test_confusion_is_720x640_for_small_and_full_test_sets(tmp_path):
    small = np.diag([30] * 10)
    small[3, 5] = 2
    full = np.diag([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    for name, counts in (("small", small), ("full", full), ("empty", np.zeros((10, 10), int))):
        a = pixels(report.plot_confusion(counts.tolist(), tmp_path / f"{name}.png", name))
        assert a.shape == (640, 720) and a.std() > 0


@pytest.mark.parametrize("count", [0, 5, 8, 9, 64])
def test_gallery_size_follows_the_count(tmp_path, count):
    images = np.zeros((count, 28, 28), np.uint8)
    images[:, 5:23, 12:16] = 255
    path = report.plot_digit_gallery(images, [f"true 1 / pred 7 ({i}%)" for i in range(count)],
                                     tmp_path / "g.png", "heading", empty_text="none")
    w, h = report.gallery_size(count)
    assert pixels(path).shape == (h, w)
    rows = max(1, -(-count // 8))
    assert w == 8 * report.GALLERY_CELL[0] and h == report.GALLERY_HEADER + rows * report.GALLERY_CELL[1]


def test_gallery_digits_are_upright_white_on_black_and_4x(tmp_path):
    # An "L": a vertical bar on the left and a foot at the bottom, so a flip or transpose shows.
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 6:10] = 255
    digit[20:24, 6:22] = 180
    other = np.full((28, 28), 40, np.uint8)
    path = report.plot_digit_gallery(np.stack([other, digit]), ["a", "b"], tmp_path / "g.png", "h", wrong=[False, True])
    a = pixels(path)
    side, (cell_w, _) = 28 * report.DIGIT_SCALE, report.GALLERY_CELL
    left, top = cell_w + (cell_w - side) // 2, report.GALLERY_HEADER + 26
    inner = slice(3, -3)  # inside the red frame of a wrong one
    shown = a[top:top + side, left:left + side][inner, inner]
    want = np.kron(digit.astype(int), np.ones((4, 4), int))[inner, inner]
    assert np.abs(shown - want).mean() < 3, "pixel for pixel, upright, white ink on black"
    assert np.corrcoef(shown.ravel(), want.ravel())[0, 1] > 0.99
    assert np.corrcoef(shown.ravel(), want.T.ravel())[0, 1] < 0.5


def test_confidence_never_rounds_to_certainty():
    assert report._pct(0.9997) == ">99.9%"
    assert report._pct(1.0) == "100%"
    assert report._pct(0.995) == "99.5%"
    assert report._pct(0.614) == "61%"


def test_the_worker_report_module_imports_neither_tensorflow_nor_matplotlib():
    code = ("import sys, digitq.worker.report, digitq.client.report\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'tensorflow', 'keras'))\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the client's side ------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["digits", "digits:3", "0123456789abcdef0123456789abcdef", "job-a", "my_model.v2"])
def test_good_targets_pass(target):
    assert check_report_target(target) == target


@pytest.mark.parametrize("target", ["", "../etc", "a/b", "digits:0", "digits:x", "name:1:2", "x" * 200, "bad\nname"])
def test_bad_targets_fail_before_anything_is_queued(target):
    with pytest.raises(InvalidRequest):
        check_report_target(target)


def test_returned_files_are_written_whole(tmp_path):
    files = {"curves.png": b"\x89PNG fake", "summary.md": b"# report\n"}
    result = {"job_id": "j", "files": {k: base64.b64encode(v).decode() for k, v in files.items()}}
    paths = write_report_files(result, tmp_path / "out" / "deeper")
    assert sorted(p.name for p in paths) == sorted(files)
    for p in paths:
        assert p.read_bytes() == files[p.name]
    assert not list((tmp_path / "out" / "deeper").glob(".*"))


@pytest.mark.parametrize("name", ["../evil.png", "/tmp/evil.png", "sub/x.png", ".hidden.png", "run.sh", ""])
def test_file_names_that_could_escape_or_surprise_are_refused(tmp_path, name):
    with pytest.raises(DigitqError, match="unexpected report file name"):
        write_report_files({"files": {name: base64.b64encode(b"x").decode()}}, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing is written when any name is bad"


def test_bad_results_are_one_line_errors(tmp_path):
    with pytest.raises(DigitqError, match="no report files"):
        write_report_files({"files": {}}, tmp_path)
    with pytest.raises(DigitqError, match="not base64"):
        write_report_files({"files": {"a.png": "%%%"}}, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DigitqError, match="not a folder"):
        write_report_files({"files": {"a.png": "eA=="}}, tmp_path / "file")
