"""Training reports (digitq.worker.report) on a real, tiny trained model: PNGs and summary.md.

TensorFlow runs only in subprocesses (as in test_train.py): one trains a small model
(1,000 images, 2 epochs, 1 CPU device) and renders its report twice, once as the job left it and
once from a copy without result.json and with a resumed epoch, then an augmented ensemble of two
and its report; another runs the `digitq.report`
task's function against a real redis-server. pytest itself only opens the files.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitq.client.report import write_report_files
from tests.helpers import run_py
from digitq.worker.data import read_idx
from digitq.worker.report import (CONFUSION_SIZE, CURVES_SIZE, DIGIT_SCALE, GALLERY_CELL, GALLERY_COLUMNS,
                                  GALLERY_HEADER, MAX_MISCLASSIFIED, REPORT_FILES, SAMPLES, gallery_size)

pytestmark = pytest.mark.slow

TEST_SIZE = 300
PNGS = [f for f in REPORT_FILES if f.endswith(".png")]


@pytest.fixture(scope="module")
def job(tmp_path_factory, data_dir):
    """A trained job-rep (with result.json, as digitq.worker.train_job writes it) and its two reports."""
    home = tmp_path_factory.mktemp("report-home")
    env = dict(os.environ, DIGITQ_HOME=str(home), DIGITQ_DATA_DIR=str(data_dir), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("DIGITQ_CPU_REPLICAS", None)
    out = run_py(f"""
        import json, shutil, time
        from digitq.common.schemas import TrainRequest
        from digitq.common.settings import load_settings
        from digitq.worker import job_folder as checkpoints
        from digitq.worker.report import render_report
        from digitq.worker.train import train

        settings = load_settings()
        req = TrainRequest.from_dict({{"epochs": 2, "train_size": 1000, "validation_size": 200,
                                      "test_size": {TEST_SIZE}, "batch_size": 32}})
        res = train(req, "job-rep", settings)
        res.model = "digits:1"
        folder = settings.jobs_dir / "job-rep"
        checkpoints.write_json(folder / "result.json", res.to_dict())
        started = time.monotonic()
        a = render_report(settings, "job-rep", settings.home / "out-a")
        seconds = time.monotonic() - started

        # The same model as a job that was interrupted and resumed, whose result.json is missing.
        copy = settings.jobs_dir / "job-copy"
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("tensorboard", "result.json"))
        hist = json.loads((copy / "history.json").read_text())
        hist[1]["resumed"] = True
        checkpoints.write_json(copy / "history.json", hist)
        b = render_report(settings, "job-copy", settings.home / "out-b")

        # An augmented ensemble of two models: files in member-<k>/, the history interleaved with
        # `member`; its accuracy recomputed here from the members' saved models.
        import keras, numpy as np
        from digitq.worker.data import load_mnist
        req = TrainRequest.from_dict({{"epochs": 2, "train_size": 500, "validation_size": 200,
                                      "test_size": {TEST_SIZE}, "batch_size": 32, "ensemble": 2,
                                      "augment": "elastic"}})
        ens = train(req, "job-ens", settings)
        ens.model = "digits:2"
        mnist = load_mnist(settings)
        x, y = mnist["test_images"][:{TEST_SIZE}, :, :, None], mnist["test_labels"][:{TEST_SIZE}]
        members = [keras.models.load_model(p) for p in ens.members]
        probs = [m.predict(x, verbose=0) for m in members]
        recomputed = float((np.mean(probs, axis=0).argmax(1) == y).mean())
        member_layers = [l.__class__.__name__ for l in members[0].layers]
        checkpoints.write_json(settings.jobs_dir / "job-ens" / "result.json", ens.to_dict())
        e = render_report(settings, "job-ens", settings.home / "out-e")
        print(json.dumps({{"a": [str(p) for p in a], "b": [str(p) for p in b], "e": [str(p) for p in e],
                          "result": res.to_dict(), "ensemble": ens.to_dict(), "render_seconds": seconds,
                          "recomputed": recomputed, "member_layers": member_layers}}))
    """, env)
    out["home"] = home
    out["env"] = env
    return out


def open_png(path) -> np.ndarray:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("L")).astype(int)


def expected_sizes(result: dict) -> dict:
    wrong = TEST_SIZE - int(np.trace(np.asarray(result["confusion"])))
    return {"curves.png": CURVES_SIZE, "confusion.png": CONFUSION_SIZE,
            "misclassified.png": gallery_size(min(wrong, MAX_MISCLASSIFIED)), "samples.png": gallery_size(SAMPLES)}


def test_every_file_is_written_and_each_png_has_its_size_and_content(job):
    for key in ("a", "b", "e"):
        paths = [Path(p) for p in job[key]]
        assert [p.name for p in paths] == list(REPORT_FILES)
        sizes = expected_sizes(job["ensemble" if key == "e" else "result"])
        for p in paths:
            if p.suffix != ".png":
                continue
            a = open_png(p)
            assert (a.shape[1], a.shape[0]) == sizes[p.name], p.name
            assert a.var() > 0, f"{p.name} is blank"
        assert not list(paths[0].parent.glob(".*")), "no temporary files are left behind"
    assert job["render_seconds"] < 120


def test_samples_show_the_first_test_digits_upright_white_on_black(job, data_dir):
    mnist = read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    a = open_png(Path(job["a"][REPORT_FILES.index("samples.png")]))
    side, (cell_w, cell_h) = 28 * DIGIT_SCALE, GALLERY_CELL
    for i in (0, 1, GALLERY_COLUMNS + 3):
        row, col = divmod(i, GALLERY_COLUMNS)
        left, top = col * cell_w + (cell_w - side) // 2, GALLERY_HEADER + row * cell_h + 26
        inner = slice(3, -3)  # inside the red frame a wrong prediction gets
        shown = a[top:top + side, left:left + side][inner, inner]
        want = np.kron(mnist[i].astype(int), np.ones((DIGIT_SCALE, DIGIT_SCALE), int))[inner, inner]
        assert np.corrcoef(shown.ravel(), want.ravel())[0, 1] > 0.99, f"sample {i} is test digit {i}, upright"
        assert np.corrcoef(shown.ravel(), want.T.ravel())[0, 1] < 0.9


def summary_rows(text: str) -> list[str]:
    return re.findall(r"^\| \d \| .*$", text, re.M)


def test_summary_states_the_numbers_and_links_every_png(job):
    res = job["result"]
    text = Path(job["a"][-1]).read_text()
    assert text.startswith("# Training report: digits:1")
    for png in PNGS:
        assert f"]({png})" in text, png
    assert f"{res['test_accuracy'] * 100:.2f}% on {TEST_SIZE} MNIST test images" in text
    assert re.search(r"^\| architecture \| `fast-cnn`, conv channels \d+-\d+, dense \d+, [\d,]+ parameters \|$", text, re.M)
    assert "| epochs | 2 |" in text
    assert "| wall time | " in text and "training " in text
    rows = summary_rows(text)
    assert len(rows) == 10
    for d, row in enumerate(rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        total, right = sum(res["confusion"][d]), res["confusion"][d][d]
        assert cells[:3] == [str(d), f"{total:,}", f"{right:,}"]
        assert cells[3] == f"{res['per_class_accuracy'][d] * 100:.2f}%"


def test_without_result_json_the_numbers_are_recomputed_and_the_resume_is_shown(job):
    a, b = Path(job["a"][-1]).read_text(), Path(job["b"][-1]).read_text()
    assert summary_rows(a) == summary_rows(b), "the recomputed confusion matrix is the stored one"
    assert "| epochs | 2 (resumed at epoch 2) |" in b
    assert "# Training report: job job-copy" in b
    assert "| wall time | unknown (training " in b
    curves_a, curves_b = (open_png(Path(job[k][0])) for k in ("a", "b"))
    assert (curves_a != curves_b).sum() > 200


@pytest.mark.redis
def test_the_report_task_resolves_models_and_job_ids_and_returns_the_files(job, shared_redis, tmp_path):
    from digitq.common.registry import register_model

    name = f"rep-{uuid.uuid4().hex[:8]}"
    r = shared_redis.client()
    model_path = str(job["home"] / "jobs" / "job-rep" / "model.keras")
    version = register_model(r, name, "job-rep", {"arch": "cnn", "path": model_path, "kind": "single"})
    env = dict(job["env"], DIGITQ_BROKER_URL=shared_redis.url)
    out = run_py(f"""
        import json, redis
        from digitq.common.errors import DigitqError
        from digitq.common.settings import load_settings
        from digitq.worker.report import run_report

        settings = load_settings()
        r = redis.Redis.from_url(settings.broker_url)
        res = {{}}
        for target in ({name!r} + ":{version}", {name!r}, "job-rep"):
            res[target] = run_report({{"target": target}}, settings, r)
        errors = {{}}
        for payload in ({{"target": "nope-{uuid.uuid4().hex[:6]}:3"}}, {{"target": "../etc"}},
                        {{"target": "no-such-job"}}, {{"target": "job-rep", "extra": 1}}, ["job-rep"],
                        {{"target": 7}}):
            try:
                run_report(payload, settings, r)
                errors[json.dumps(payload)] = None
            except DigitqError as exc:
                errors[json.dumps(payload)] = [type(exc).__name__, str(exc)]
        print(json.dumps({{"results": res, "errors": errors}}))
    """, env)
    folder = job["home"] / "jobs" / "job-rep" / "report"
    for target, res in out["results"].items():
        assert res["job_id"] == "job-rep" and res["folder"] == str(folder), target
        assert res["model"] == ("digits:1" if target == "job-rep" else f"{name}:{version}")  # result.json's
        assert sorted(res["files"]) == sorted(REPORT_FILES)
    # What the worker wrote on the volume is what it sent; the client writes it to -o DIR.
    last = out["results"]["job-rep"]
    for fname, b64 in last["files"].items():
        assert base64.b64decode(b64) == (folder / fname).read_bytes(), fname
    written = write_report_files(last, tmp_path / "from-client")
    assert sorted(p.name for p in written) == sorted(REPORT_FILES)
    for p in written:
        if p.suffix == ".png":
            assert open_png(p).var() > 0
    by_ref = base64.b64decode(out["results"][f"{name}:{version}"]["files"]["summary.md"]).decode()
    assert by_ref.startswith(f"# Training report: {name}:{version}")

    kinds = [v[0] if v else None for v in out["errors"].values()]
    assert kinds == ["NoSuchModel", "InvalidRequest", "NoSuchJob", "InvalidRequest", "InvalidRequest",
                     "InvalidRequest"], out["errors"]
    assert all("\n" not in v[1] for v in out["errors"].values())


def test_reading_reports_needs_no_tensorflow():
    """What this module imports to check reports (the client's writer, the worker's report
    constants) loads no TensorFlow: only the subprocesses above train and draw."""
    code = ("import sys, digitq.client.report, digitq.worker.report\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_an_augmented_ensemble_averages_its_members(job):
    ens = job["ensemble"]
    assert len(ens["members"]) == 2 and len(ens["member_accuracies"]) == 2
    assert job["recomputed"] == pytest.approx(ens["test_accuracy"], abs=1e-9)
    assert [e["member"] for e in ens["history"]] == [1, 1, 2, 2]
    assert not any(name.startswith("Random") for name in job["member_layers"]), "augmentation stays out of the saved model"
    assert (job["home"] / "jobs" / "job-ens" / "member-1" / "model.keras").is_file()


def test_an_ensemble_is_reported_as_its_averaged_models(job):
    ens = job["ensemble"]
    text = Path(job["e"][-1]).read_text()
    assert "| architecture | ensemble of 2 averaged models, each `fast-cnn`" in text
    assert "| epochs | 2 per model |" in text
    assert f"{ens['test_accuracy'] * 100:.2f}% on {TEST_SIZE} MNIST test images" in text
    each = ", ".join(f"{a * 100:.2f}%" for a in ens["member_accuracies"])
    assert f"| each model alone | {each} |" in text
    for d, row in enumerate(summary_rows(text)):
        assert row.startswith(f"| {d} | {sum(ens['confusion'][d]):,} | {ens['confusion'][d][d]:,} |")
