"""`digitq predict`, `evaluate` and `models ...` through the real CLI, a real redis-server and a
real worker (2 CPU replicas), on real image files written with Pillow from real MNIST test digits.

One small model (3,000 images, 1 epoch) is trained once for the whole session (conftest). The image folders
live on the shared volume (below DIGITQ_HOME), so the same files serve local and --remote runs.
The last test restarts the session's worker and waits until it is ready again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import redis
from PIL import Image

from digitq.client.api import Client
from digitq.common.errors import DigitqError
from digitq.common.names import PIXELS_KEY_PREFIX, PREDICT_QUEUE, PREDICT_TASK
from tests.helpers import assert_one_line_error, cli_json, mnist_test, ok
from tests.processes import run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

COLUMNS = ["path", "digit", "confidence", "flag", "error"] + [f"p{d}" for d in range(10)]

GOOD_DIGITS = 60
"""Real MNIST test digits in the main folder (indexes 0..59)."""

JPEG_NAMED_PNG = "d007.png"
"""A JPEG file with a .png name: Pillow goes by content, so it is still classified."""

JUNK = {
    "zz-bomb.png": "image too large",
    "zz-empty.png": "empty file",
    "zz-loop-a": "symlink loop",
    "zz-loop-b": "symlink loop",
    "zz-notes.txt": "not an image file",
    "zz-text.png": "not an image file",
    "zz-truncated.png": "truncated or corrupt",
}
"""Bad files of the main folder and a fragment of the error each must get. Named to sort after
the digits, so a chunk of 7 holds nothing but junk."""

if not IS_ROOT:
    JUNK["zz-unreadable.png"] = "permission denied"  # root reads a mode-000 file anyway

SUB_FILES = ["sub/0001.png", "sub/0002.png", "sub/deeper/0003.png"]


# --- helpers ------------------------------------------------------------------------------


def summary_counts(stderr: str) -> tuple[int, int]:
    found = re.findall(r"^(\d+) classified(?: \(\d+ flagged\))?, (\d+) failed -> ", stderr, re.M)
    assert len(found) == 1, stderr
    return int(found[0][0]), int(found[0][1])


def read_csv_text(text: str) -> tuple[list[str], list[dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return reader.fieldnames, rows


def norm(row: dict) -> dict:
    """A CSV row (strings, '' for missing) or a JSON row (typed, null for missing), as one shape."""
    missing = ("", None)
    probs = None if row["p0"] in missing else tuple(float(row[f"p{d}"]) for d in range(10))
    return {
        "path": row["path"],
        "digit": None if row["digit"] in missing else int(row["digit"]),
        "confidence": None if row["confidence"] in missing else float(row["confidence"]),
        "error": None if row["error"] in missing else row["error"],
        "probs": probs,
    }


def assert_same_rows(got: list[dict], want: list[dict], tol: float = 1e-5, errors: bool = True) -> None:
    """Same paths in the same order, same digits, same probabilities (to `tol`), same errors."""
    got, want = [norm(r) for r in got], [norm(r) for r in want]
    assert [r["path"] for r in got] == [r["path"] for r in want]
    for g, w in zip(got, want):
        assert g["digit"] == w["digit"], (g, w)
        assert (g["probs"] is None) == (w["probs"] is None), (g, w)
        if g["probs"] is not None:
            assert max(abs(a - b) for a, b in zip(g["probs"], w["probs"])) <= tol, (g, w)
        if errors:
            assert g["error"] == w["error"], (g["path"], g["error"], w["error"])


def on_paper(digit: np.ndarray, size: int, pad: int) -> Image.Image:
    """An MNIST digit drawn dark on white paper, resized to `size` px with a `pad` px margin."""
    ink = Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BICUBIC)
    page = Image.new("L", (size + 2 * pad, size + 2 * pad), 255)
    page.paste(ink, (pad, pad))
    return page


def transparent(digit: np.ndarray, size: int) -> Image.Image:
    """Dark-blue ink whose alpha is the digit, on a fully transparent background stored as black."""
    alpha = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    colour = [Image.new("L", (size, size), v) for v in (20, 20, 70)]
    rgba = Image.merge("RGBA", (*colour, alpha))
    under = np.asarray(rgba).copy()
    under[under[..., 3] == 0, :3] = 0  # what lies under alpha 0 must not matter
    return Image.fromarray(under)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def bomb_png() -> bytes:
    """A real, tiny PNG whose IHDR claims 50000 x 50000 pixels (CRC recomputed, so it parses)."""
    data = bytearray(png_bytes(Image.new("L", (10, 10), 255)))
    assert data[12:16] == b"IHDR"
    data[16:24] = (50000).to_bytes(4, "big") + (50000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def write_digit(path: Path, i: int, digit: np.ndarray) -> None:
    """Vary format, size and colour mode by index."""
    size = 40 + (i * 13) % 90
    kind = i % 6
    if path.name == JPEG_NAMED_PNG:
        on_paper(digit, size, 10).convert("RGB").save(path, "JPEG", quality=92)
    elif kind == 1:
        on_paper(digit, size, 8).convert("RGB").save(path, "JPEG", quality=90)
    elif kind == 2:
        on_paper(digit, size, 6).save(path, "BMP")
    elif kind == 3:
        on_paper(digit, size, 12).save(path, "WEBP", quality=90)
    elif kind == 4:
        transparent(digit, size).save(path, "PNG")
    elif kind == 5:  # RGB, off-centre on a wide page
        page = Image.new("RGB", (size * 3, size + 40), (250, 248, 240))
        page.paste(on_paper(digit, size, 0).convert("RGB"), (size * 2 - 10, 20))
        page.save(path, "PNG")
    else:
        on_paper(digit, size, 10).save(path, "PNG")


def digit_name(i: int) -> str:
    if f"d{i:03d}.png" == JPEG_NAMED_PNG:
        return JPEG_NAMED_PNG
    return f"d{i:03d}" + [".png", ".jpg", ".bmp", ".webp", ".png", ".png"][i % 6]


def rows_by_predict(folder, ref, env, out: Path, *extra) -> list[dict]:
    ok(run_cli(["predict", str(folder), "--model", ref, "-o", str(out), *extra], env))
    fields, rows = read_csv_text(out.read_text())
    assert fields == COLUMNS
    return rows


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_env(service_env) -> dict:
    return service_env


@pytest.fixture(scope="module")
def mnist(data_dir) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test set: images uint8 [10000, 28, 28], labels [10000]."""
    return mnist_test(data_dir)


@pytest.fixture(scope="module")
def model(trained_model) -> SimpleNamespace:
    """The session's small model (3,000 images, 1 epoch), registered as NAME:1."""
    return trained_model


@pytest.fixture(scope="module")
def folders(shared_home, mnist) -> SimpleNamespace:
    """Image folders on the shared volume (so the worker may read them with --remote)."""
    images, labels = mnist
    base = shared_home / f"predict-{uuid.uuid4().hex[:8]}"
    main = base / "digits"
    (main / "sub" / "deeper").mkdir(parents=True)

    expected_labels = {}
    for i in range(GOOD_DIGITS):
        name = digit_name(i)
        write_digit(main / name, i, images[i])
        expected_labels[name] = int(labels[i])
    for k, rel in enumerate(SUB_FILES):
        on_paper(images[60 + k], 64, 8).save(main / rel, "PNG")
        expected_labels[rel] = int(labels[60 + k])
    # never listed: hidden files and the files operating systems drop into picture folders
    on_paper(images[70], 64, 8).save(main / ".hidden.png", "PNG")
    (main / "Thumbs.db").write_bytes(b"\x00" * 64)

    full = png_bytes(on_paper(images[71], 280, 20))
    (main / "zz-truncated.png").write_bytes(full[: len(full) // 2])
    (main / "zz-bomb.png").write_bytes(bomb_png())
    (main / "zz-empty.png").write_bytes(b"")
    (main / "zz-notes.txt").write_text("shopping list: milk, eggs\n")
    (main / "zz-text.png").write_text("this is not a PNG at all\n")
    os.symlink("zz-loop-b", main / "zz-loop-a")
    os.symlink("zz-loop-a", main / "zz-loop-b")
    if not IS_ROOT:
        on_paper(images[72], 64, 8).save(main / "zz-unreadable.png", "PNG")
        os.chmod(main / "zz-unreadable.png", 0)

    few = base / "few"
    few.mkdir()
    for k in range(8):
        on_paper(images[80 + k], 56, 8).save(few / f"{k:02d}.png", "PNG")

    labelled = base / "labelled"
    for d in range(10):
        (labelled / str(d)).mkdir(parents=True)
        for k, idx in enumerate(np.flatnonzero(labels[200:] == d)[:3] + 200):
            on_paper(images[idx], 60, 8).save(labelled / str(d) / f"{k}.png", "PNG")
    (labelled / "9" / "notes.txt").write_text("not a digit\n")

    top = sorted([digit_name(i) for i in range(GOOD_DIGITS)] + list(JUNK))
    yield SimpleNamespace(main=main, few=few, labelled=labelled, labels=expected_labels, top=top,
                          recursive=sorted(top[:GOOD_DIGITS] + SUB_FILES) + top[GOOD_DIGITS:])
    if not IS_ROOT:
        os.chmod(main / "zz-unreadable.png", 0o644)


@pytest.fixture(scope="module")
def baseline(model, folders, module_env, tmp_path_factory) -> SimpleNamespace:
    """`digitq predict FOLDER --model NAME -o out.csv` with every default: the reference rows."""
    out = tmp_path_factory.mktemp("baseline") / "out.csv"
    proc = run_cli(["predict", str(folders.main), "--model", model.name, "-o", str(out)], module_env)
    fields, rows = read_csv_text(out.read_text()) if out.exists() else (None, [])
    return SimpleNamespace(proc=proc, out=out, fields=fields, rows=rows)


# --- predict ------------------------------------------------------------------------------


def test_predict_folder_writes_one_row_per_file_with_per_file_errors(baseline, folders):
    proc = ok(baseline.proc)
    assert baseline.fields == COLUMNS
    rows = baseline.rows
    assert [r["path"] for r in rows] == folders.top  # sorted; no hidden files, no Thumbs.db, no sub-folder
    good = [r for r in rows if r["path"] in folders.labels]
    bad = [r for r in rows if r["path"] in JUNK]
    assert len(good) == GOOD_DIGITS and len(bad) == len(JUNK)

    for r in good:
        assert r["error"] == "", r
        probs = [float(r[f"p{d}"]) for d in range(10)]
        assert all(0.0 <= p <= 1.0 for p in probs), r
        assert abs(sum(probs) - 1.0) < 1e-3, r
        assert int(r["digit"]) == int(np.argmax(probs)) and float(r["confidence"]) == max(probs), r
    assert JPEG_NAMED_PNG in {r["path"] for r in good}

    for r in bad:
        assert r["digit"] == "" and r["confidence"] == "", r
        assert all(r[f"p{d}"] == "" for d in range(10)), r
        assert r["error"] and "\n" not in r["error"] and "\r" not in r["error"], r
        assert JUNK[r["path"]] in r["error"], r

    assert summary_counts(proc.stderr) == (GOOD_DIGITS, len(JUNK))
    correct = sum(int(r["digit"]) == folders.labels[r["path"]] for r in good)
    assert correct / len(good) > 0.6, f"{correct}/{len(good)} correct"
    # the summary is one line, output path included, also when stderr is not a terminal
    whole = rf"{GOOD_DIGITS} classified(?: \(\d+ flagged\))?, {len(JUNK)} failed -> {re.escape(str(baseline.out))} \([\d,.]+ images/s\)"
    assert any(re.fullmatch(whole, line) for line in proc.stderr.splitlines()), proc.stderr


def test_json_lines_and_stdout_hold_the_same_rows(baseline, model, folders, client_env, tmp_path):
    ok(baseline.proc)
    jsonl = tmp_path / "out.jsonl"
    proc = ok(run_cli(["predict", str(folders.main), "--model", model.name, "--format", "json", "-o", str(jsonl)],
                      client_env))
    lines = jsonl.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(list(r) == COLUMNS for r in records)
    bad = [r for r in records if r["path"] in JUNK]
    assert all(r["digit"] is None and r["p0"] is None and r["error"] for r in bad)
    good = [r for r in records if r["path"] not in JUNK]
    assert all(isinstance(r["digit"], int) and r["error"] is None for r in good)
    assert_same_rows(records, baseline.rows)
    assert summary_counts(proc.stderr) == (GOOD_DIGITS, len(JUNK))

    proc = ok(run_cli(["predict", str(folders.main), "--model", model.name, "-o", "-"], client_env))
    assert proc.stdout.splitlines()[0] == ",".join(COLUMNS)  # nothing but the CSV on stdout
    fields, rows = read_csv_text(proc.stdout)
    assert fields == COLUMNS
    assert_same_rows(rows, baseline.rows)
    assert summary_counts(proc.stderr) == (GOOD_DIGITS, len(JUNK))


def test_recursive_includes_sub_folders_with_relative_paths(baseline, model, folders, client_env, tmp_path):
    ok(baseline.proc)
    assert not any(r["path"].startswith("sub") for r in baseline.rows)
    rows = rows_by_predict(folders.main, model.name, client_env, tmp_path / "rec.csv", "--recursive")
    assert [r["path"] for r in rows] == folders.recursive
    sub = [r for r in rows if r["path"] in SUB_FILES]
    assert len(sub) == len(SUB_FILES) and all(r["error"] == "" and r["digit"] != "" for r in sub)
    assert_same_rows([r for r in rows if r["path"] not in SUB_FILES], baseline.rows)


def test_one_process_and_a_roundabout_folder_name_give_the_same_rows(baseline, model, folders, client_env, tmp_path):
    """--jobs 1 preprocesses in the client itself (no pool); a FOLDER spelt `main/sub/..` still
    gives paths relative to the folder, sub-folders included."""
    ok(baseline.proc)
    roundabout = f"{folders.main}/sub/.."
    rows = rows_by_predict(roundabout, model.name, client_env, tmp_path / "j1.csv", "--jobs", "1", "--recursive")
    assert [r["path"] for r in rows] == folders.recursive
    assert_same_rows([r for r in rows if r["path"] not in SUB_FILES], baseline.rows)


def test_small_chunks_give_the_same_rows(baseline, model, folders, client_env, tmp_path):
    ok(baseline.proc)
    paths = [r["path"] for r in baseline.rows]
    chunks = [paths[i:i + 7] for i in range(0, len(paths), 7)]
    assert any(all(p in JUNK for p in c) for c in chunks)  # the layout has a chunk with nothing to classify
    rows = rows_by_predict(folders.main, model.name, client_env, tmp_path / "c7.csv", "--chunk-size", "7")
    assert_same_rows(rows, baseline.rows)


def test_no_chunk_pixels_stay_in_redis_after_a_run(baseline, module_env):
    ok(baseline.proc)
    r = redis.Redis.from_url(module_env["DIGITQ_BROKER_URL"])
    assert list(r.scan_iter(PIXELS_KEY_PREFIX + "*")) == []  # the client deleted each chunk's once read


def test_inline_base64_pixels_still_work_and_match(model, mnist, module_env):
    """Clients from before the pixels moved beside the message (a rolling upgrade) send them inline."""
    import base64

    client = Client(module_env["DIGITQ_BROKER_URL"])
    raw = mnist[0][:3].tobytes()
    key, ids = PIXELS_KEY_PREFIX + f"match-{uuid.uuid4().hex[:8]}", [uuid.uuid4().hex for _ in range(2)]
    client.redis.set(key, raw, ex=120)
    for task_id, payload in zip(ids, ({"pixels_key": key}, {"pixels": base64.b64encode(raw).decode()})):
        client.app.send_task(PREDICT_TASK, args=[{"model": f"{model.name}:1", "count": 3, **payload}],
                             task_id=task_id, queue=PREDICT_QUEUE)
    beside, inline = (client.wait_result(t, timeout=120) for t in ids)
    assert beside == inline and len(beside["probs"]) == 3 and beside["errors"] == [None] * 3


@pytest.mark.parametrize("stored, key, fragment", [
    (None, "digitq:pixels:never-stored", "are gone from Redis"),
    (b"\0" * 100, "digitq:pixels:short", "holds 100 bytes, expected 2 x 784"),
    (b"\0" * 1568, "digitq:job:someone-else", "pixels_key must start with 'digitq:pixels:'"),
])
def test_chunks_with_missing_or_foreign_pixels_fail_with_a_reason(model, module_env, stored, key, fragment):
    client = Client(module_env["DIGITQ_BROKER_URL"])
    if stored is not None:
        client.redis.set(key, stored, ex=120)
    task_id = f"pixels-{uuid.uuid4().hex[:8]}"
    client.app.send_task(PREDICT_TASK, args=[{"model": f"{model.name}:1", "pixels_key": key, "count": 2}],
                         task_id=task_id, queue=PREDICT_QUEUE)
    with pytest.raises(DigitqError, match=re.escape(fragment)):
        client.wait_result(task_id, timeout=120)


def test_one_image_chunks_on_a_two_replica_worker(baseline, model, folders, client_env, tmp_path):
    # A chunk smaller than the replica count once crashed Keras' batch-norm on the empty replica.
    ok(baseline.proc)
    rows = rows_by_predict(folders.main, model.name, client_env, tmp_path / "c1.csv", "--chunk-size", "1")
    # Same digits; probabilities to 1e-3: on a CPU with AMX the worker computes in bfloat16
    # (DIGITQ_INFERENCE_PRECISION=auto), whose oneDNN kernels differ with the batch's shape.
    assert_same_rows(rows, baseline.rows, tol=1e-3)


def test_remote_folder_gives_the_same_rows_as_local(baseline, model, folders, client_env, tmp_path):
    ok(baseline.proc)
    out = tmp_path / "remote.csv"
    proc = ok(run_cli(["predict", str(folders.main), "--model", model.name, "--remote", "-o", str(out)], client_env))
    fields, rows = read_csv_text(out.read_text())
    assert fields == COLUMNS
    assert summary_counts(proc.stderr) == (GOOD_DIGITS, len(JUNK))
    assert_same_rows(rows, baseline.rows, errors=False)  # same files, digits and probabilities
    assert_same_rows(rows, baseline.rows)  # and the very same per-file error messages


def test_remote_folder_outside_the_roots_is_refused(model, client_env, tmp_path):
    out = tmp_path / "out.csv"
    proc = run_cli(["predict", "/etc", "--model", model.name, "--remote", "-o", str(out)], client_env)
    assert_one_line_error(proc, "outside the worker's allowed roots")
    assert not out.exists()


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing folder", "does not exist"),
        ("empty folder", "holds no files"),
        ("file, not a folder", "is not a folder"),
        ("unknown model", "no model named 'nope'"),
        ("bad model ref", "invalid model name 'a/b'"),
        ("chunk size 0", "--chunk-size must be between 1 and 5000"),
        ("format xml", "--format must be csv or json"),
    ],
)
def test_predict_bad_input_is_one_line(case, fragment, model, folders, client_env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "one.png"
    a_file.write_bytes(png_bytes(Image.new("L", (28, 28), 255)))
    out = tmp_path / "out" / "rows.csv"
    out.parent.mkdir()
    args = {
        "missing folder": [str(tmp_path / "no-such-folder"), "--model", model.name],
        "empty folder": [str(empty), "--model", model.name],
        "file, not a folder": [str(a_file), "--model", model.name],
        "unknown model": [str(folders.few), "--model", "nope"],
        "bad model ref": [str(folders.few), "--model", "a/b"],
        "chunk size 0": [str(folders.few), "--model", model.name, "--chunk-size", "0"],
        "format xml": [str(folders.few), "--model", model.name, "--format", "xml"],
    }[case]
    assert_one_line_error(run_cli(["predict", *args, "-o", str(out)], client_env), fragment)
    assert list(out.parent.iterdir()) == []  # no output, and no partial file left behind


def test_folder_with_only_junk_exits_1(model, client_env, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("hello\n")
    (junk / "b.png").write_bytes(b"")
    (junk / "c.png").write_text("not an image\n")
    out = tmp_path / "out.csv"
    proc = run_cli(["predict", str(junk), "--model", model.name, "-o", str(out)], client_env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert summary_counts(proc.stderr) == (0, 3)
    assert "0 classified, 3 failed" in proc.stderr
    fields, rows = read_csv_text(out.read_text())
    assert [r["path"] for r in rows] == ["a.txt", "b.png", "c.png"] and all(r["error"] for r in rows)


# --- evaluate and export ------------------------------------------------------------------


def test_train_on_a_labelled_folder_of_own_images(model, folders, client_env):
    """The "my own handwriting" use: sub-folders 0..9 as the training set (tested on MNIST's test set)."""
    res = cli_json(["submit-train", "--dataset", str(folders.labelled), "--epochs", "1", "--batch-size", "8",
                    "--test-size", "200", "--name", "own-hand", "--json"], client_env)
    assert res["state"] == "SUCCESS" and res["dataset"] == str(folders.labelled)
    assert res["train_images"] == 24  # 30 images, 20% (6) held out for validation; notes.txt skipped
    assert res["model"].startswith("own-hand:") and 0.0 <= res["test_accuracy"] <= 1.0


def test_evaluate_on_mnist_and_on_a_labelled_folder(model, folders, client_env):
    ref = f"{model.name}:1"
    res = cli_json(["evaluate", "--model", ref, "--test-size", "500", "--json"], client_env)
    assert res["model"] == ref and res["images"] == 500
    confusion = np.array(res["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 500
    assert len(res["per_class_accuracy"]) == 10
    for d in range(10):
        assert res["per_class_accuracy"][d] == pytest.approx(confusion[d, d] / confusion[d].sum())
    assert res["accuracy"] == pytest.approx(np.trace(confusion) / 500)
    assert abs(res["accuracy"] - model.result["test_accuracy"]) <= 0.01  # the same 500 images training scored

    res = cli_json(["evaluate", "--model", ref, "--dataset", str(folders.labelled), "--json"], client_env)
    assert res["model"] == ref and res["images"] == 30
    confusion = np.array(res["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 30 and confusion.sum(axis=1).tolist() == [3] * 10
    assert len(res["per_class_accuracy"]) == 10 and res["accuracy"] > 0.5
    assert [s[0] for s in res["skipped"]] == ["9/notes.txt"] and "not an image file" in res["skipped"][0][1]

    proc = run_cli(["evaluate", "--model", ref, "--dataset", "/etc", "--json"], client_env)
    assert_one_line_error(proc, "outside the worker's allowed roots")


VERIFY_EXPORT = """
    import json, sys
    import numpy as np
    import keras
    import tensorflow as tf

    export_dir, model_path, pixels_path = sys.argv[1:4]
    x = np.load(pixels_path)
    served = tf.saved_model.load(export_dir).signatures["serving_default"](pixels=tf.constant(x))
    direct = keras.models.load_model(model_path).predict(x, verbose=0)
    print(json.dumps({"served": served["probabilities"].numpy().tolist(),
                      "digit": served["digit"].numpy().tolist(), "direct": direct.tolist()}))
"""


def test_export_writes_a_saved_model_that_serves_the_same_probabilities(model, mnist, client_env, tmp_path):
    env = dict(client_env, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    target = tmp_path / "exported"
    proc = ok(run_cli(["models", "export", model.name, str(target)], env))
    # rich wraps long lines at 80 columns when stdout is not a terminal: compare without whitespace
    assert f"exported{model.name}:1to{target}" in "".join(proc.stdout.split())
    assert (target / "saved_model.pb").is_file()

    record = cli_json(["models", "show", f"{model.name}:1", "--json"], client_env)
    images, _ = mnist
    pixels = tmp_path / "x.npy"
    np.save(pixels, images[:5].astype(np.float32)[..., None])  # raw 0..255, shape [5, 28, 28, 1]
    verify = subprocess.run([sys.executable, "-c", textwrap.dedent(VERIFY_EXPORT), str(target), record["path"],
                             str(pixels)], env=env, capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stderr[-4000:]
    got = json.loads(verify.stdout.strip().splitlines()[-1])
    served, direct = np.array(got["served"]), np.array(got["direct"])
    assert served.shape == direct.shape == (5, 10)
    assert np.abs(served - direct).max() <= 1e-5
    assert got["digit"] == served.argmax(axis=1).tolist()
    assert np.allclose(served.sum(axis=1), 1.0, atol=1e-4)

    again = run_cli(["models", "export", model.name, str(target)], client_env)
    assert_one_line_error(again, "already exists")


# --- the registry -------------------------------------------------------------------------


def test_registry_versions_promote_and_delete(model, folders, client_env, tmp_path):
    name = model.name
    second = cli_json(["submit-train", "--json", "--name", name, "--epochs", "1", "--train-size", "1000",
                       "--validation-size", "100", "--test-size", "200", "--batch-size", "32", "--seed", "1"],
                      client_env)
    assert second["state"] == "SUCCESS" and second["model"] == f"{name}:2"

    mine = [r for r in cli_json(["models", "list", "--json"], client_env) if r["name"] == name]
    assert [r["version"] for r in mine] == [2, 1]  # newest first
    assert [r["job_id"] for r in mine] == [second["job_id"], model.result["job_id"]]
    assert not any(r["promoted"] for r in mine)
    # NAME alone: the best-scoring version (a quick run does not take over by being newer)
    best = max(mine, key=lambda r: (r["test_accuracy"], r["version"]))["version"]
    assert [r["version"] for r in mine if r["default"]] == [best]
    assert cli_json(["models", "show", name, "--json"], client_env)["version"] == best

    v1 = rows_by_predict(folders.few, f"{name}:1", client_env, tmp_path / "v1.csv")
    v2 = rows_by_predict(folders.few, f"{name}:2", client_env, tmp_path / "v2.csv")
    assert any(a["p0"] != b["p0"] or a["p1"] != b["p1"] for a, b in zip(v1, v2))  # two different models

    # Two models trained apart, combined into an ensemble that averages them
    proc = ok(run_cli(["models", "combine", f"{name}:1", f"{name}:2", "--name", f"{name}-both"], client_env))
    assert proc.stdout.startswith(f"registered {name}-both:1: the average of 2 networks from {name}:1, {name}:2; "
                                  "MNIST test accuracy "), proc.stdout
    both = cli_json(["models", "show", f"{name}-both", "--json"], client_env)
    assert both["kind"] == "ensemble" and both["combined_from"] == [f"{name}:1", f"{name}:2"]
    scored = cli_json(["evaluate", "--model", f"{name}-both", "--json"], client_env)
    assert both["test_accuracy"] == scored["accuracy"] and scored["images"] == 10000
    averaged = rows_by_predict(folders.few, f"{name}-both", client_env, tmp_path / "both.csv")
    for a, b, c in zip(v1, v2, averaged):
        for d in range(10):
            assert abs((float(a[f"p{d}"]) + float(b[f"p{d}"])) / 2 - float(c[f"p{d}"])) < 2e-6, (a, b, c)
    assert_one_line_error(run_cli(["models", "combine", f"{name}:1"], client_env), "at least two models")
    assert_one_line_error(run_cli(["models", "combine", f"{name}:1", f"{name}-both"], client_env),
                          "repeats a network already combined")
    assert_one_line_error(run_cli(["models", "combine", f"{name}:1", "nope"], client_env), "no model named 'nope'")

    proc = ok(run_cli(["models", "promote", f"{name}:1"], client_env))
    assert proc.stdout.strip() == f"{name} -> {name}:1"
    shown = cli_json(["models", "show", name, "--json"], client_env)
    assert shown["version"] == 1 and shown["promoted"] is True
    mine = [r for r in cli_json(["models", "list", "--json"], client_env) if r["name"] == name]
    assert [(r["version"], r["promoted"]) for r in mine] == [(2, False), (1, True)]
    by_name = rows_by_predict(folders.few, name, client_env, tmp_path / "name.csv")
    assert_same_rows(by_name, v1, tol=0.0)  # NAME now means version 1

    proc = ok(run_cli(["models", "delete", f"{name}:2"], client_env))
    assert proc.stdout.strip() == f"deleted {name}:2"
    assert_one_line_error(run_cli(["models", "show", f"{name}:2"], client_env), "has no version 2")
    mine = [r for r in cli_json(["models", "list", "--json"], client_env) if r["name"] == name]
    assert [r["version"] for r in mine] == [1]
    assert cli_json(["models", "show", name, "--json"], client_env)["version"] == 1
    assert_one_line_error(run_cli(["models", "show", "nope"], client_env), "no model named 'nope'")


def test_registry_survives_a_worker_restart(shared_worker, model, folders, client_env, tmp_path):
    """Last in this file: the worker is the session's, so it is made ready again before returning."""
    name = model.name
    before = [r for r in cli_json(["models", "list", "--json"], client_env) if r["name"] == name]
    assert before
    rows_before = rows_by_predict(folders.few, name, client_env, tmp_path / "before.csv")

    shared_worker.stop()
    try:
        while_down = [r for r in cli_json(["models", "list", "--json"], client_env) if r["name"] == name]
        assert while_down == before  # the registry lives in Redis, not in the worker
    finally:
        shared_worker.start()
        shared_worker.wait_ready(180)  # looks only at the lines this start wrote

    after = [r for r in cli_json(["models", "list", "--json"], client_env) if r["name"] == name]
    assert after == before
    assert cli_json(["models", "show", name, "--json"], client_env)["version"] == [r["version"] for r in before if r["default"]][0]
    rows_after = rows_by_predict(folders.few, name, client_env, tmp_path / "after.csv")
    assert_same_rows(rows_after, rows_before)
