"""`digitq report` and `digitq predict --gallery` through the real CLI, a real redis-server and a
real worker (2 CPU replicas), with the session's small model (conftest's trained_model).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from digitq.client.gallery import CELL_H, CELL_W, LEGEND_H, sheet_size
from digitq.worker.report import REPORT_FILES
from tests.helpers import assert_one_line_error, ok, read_idx
from tests.processes import run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def one_line_error(proc, code: int, *fragments) -> str:
    return assert_one_line_error(proc, *fragments, code=code)


@pytest.fixture(scope="module")
def module_env(service_env) -> dict:
    return service_env


@pytest.fixture(scope="module")
def model(trained_model) -> SimpleNamespace:
    return trained_model


def check_report_folder(folder):
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPORT_FILES)
    for name in REPORT_FILES:
        if name.endswith(".png"):
            with Image.open(folder / name) as im:
                assert im.format == "PNG" and np.asarray(im.convert("L")).var() > 0, name
    summary = (folder / "summary.md").read_text()
    assert all(f"]({n})" in summary for n in REPORT_FILES if n.endswith(".png"))
    return summary


def test_report_by_model_ref_writes_the_files_to_the_output_folder(model, module_env, tmp_path, shared_home):
    out = tmp_path / "rep"
    res = json.loads(ok(run_cli(["report", f"{model.name}:1", "-o", str(out), "--json"], module_env)).stdout)
    assert res["job_id"] == model.result["job_id"] and res["model"] == f"{model.name}:1"
    assert sorted(res["files"]) == sorted(REPORT_FILES) and res["output"] == str(out)
    summary = check_report_folder(out)
    assert summary.startswith(f"# Training report: {model.name}:1")
    assert f"{model.result['test_accuracy'] * 100:.2f}% on {model.test_size} MNIST test images" in summary
    # The worker kept its copy in the job's folder on the shared volume.
    on_volume = shared_home / "jobs" / model.result["job_id"] / "report"
    for name in REPORT_FILES:
        assert (on_volume / name).read_bytes() == (out / name).read_bytes()


def test_report_by_job_id_and_by_bare_name(model, module_env, tmp_path):
    proc = ok(run_cli(["report", model.result["job_id"], "-o", str(tmp_path / "by-job")], module_env))
    assert str(tmp_path / "by-job") in proc.stdout
    check_report_folder(tmp_path / "by-job")
    # No -o: report-<job id> in the command's working directory.
    proc = ok(subprocess.run([sys.executable, "-m", "digitq.client", "report", model.name], env=module_env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=300))
    default = tmp_path / f"report-{model.result['job_id']}"
    assert f"report of {model.name}:1 -> report-{model.result['job_id']}/" in proc.stdout
    check_report_folder(default)


def test_report_errors_are_one_line(model, module_env, tmp_path):
    one_line_error(run_cli(["report", "../etc"], module_env), 2, "invalid report target")
    one_line_error(run_cli(["report", "digits:0"], module_env), 2, "invalid model version")
    # What was typed names nothing, or a file where a folder goes: usage errors, exit 2 (README "Exit codes")
    one_line_error(run_cli(["report", f"nope-{uuid.uuid4().hex[:6]}:1"], module_env), 2, "no model named")
    one_line_error(run_cli(["report", f"nojob{uuid.uuid4().hex[:6]}"], module_env), 2, "no model or job named")
    (tmp_path / "file").write_text("x")
    one_line_error(run_cli(["report", model.name, "-o", str(tmp_path / "file")], module_env), 2, "not a folder")


@pytest.fixture(scope="module")
def digit_folder(shared_home, data_dir):
    images = read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    folder = shared_home / f"gallery-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    for i in range(23):
        Image.fromarray(255 - images[i]).save(folder / f"d{i:03d}.png")  # dark ink on white, as scanned
    (folder / "zz-notes.txt").write_text("not an image")
    return folder


def test_predict_gallery_draws_every_file(model, module_env, digit_folder, tmp_path):
    sheet = tmp_path / "sheet.png"
    proc = ok(run_cli(["predict", str(digit_folder), "--model", model.name, "-o", str(tmp_path / "out.csv"),
                       "--gallery", str(sheet), "--chunk-size", "10"], module_env))
    assert "gallery of 24 image(s) -> " in proc.stderr
    with Image.open(sheet) as im:
        assert im.size == sheet_size(24) == (20 * CELL_W, 2 * CELL_H + LEGEND_H)  # the legend under the grid
        cells = json.loads(im.text["digitq:cells"])
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert cells == [f"d{i:03d}.png" for i in range(23)] + ["zz-notes.txt"]
    # The last cell (the .txt file) is the grey error cell; the others show white-on-black digits.
    col, row = 23 % 20, 23 // 20
    error_cell = rgb[row * CELL_H + 2: row * CELL_H + 58, col * CELL_W + 2: col * CELL_W + 58]
    assert (np.all(error_cell == (128, 128, 128), axis=-1)).mean() > 0.8
    first = rgb[2:58, 2:58, 0]
    assert first.max() > 200 and np.median(first) < 30, "MNIST style: white ink on black"


def test_predict_gallery_with_remote_is_refused(model, module_env, digit_folder, tmp_path):
    one_line_error(run_cli(["predict", str(digit_folder), "--model", model.name, "--remote",
                            "--gallery", str(tmp_path / "s.png")], module_env), 2, "--gallery")
    assert not (tmp_path / "s.png").exists()
