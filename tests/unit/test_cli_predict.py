"""`predict`, `evaluate` and `report` against a stand-in Client: options, refusals before any
work, the summary line and JSON, and the exit code 1 when nothing was classified."""

from __future__ import annotations

import json
import os

import pytest

from digitq.common.errors import NoSuchModel
from digitq.common.schemas import EvaluateRequest, PredictSummary, ReportRequest
from tests.unit.cli_fake import JOB, cli  # noqa: F401  (the fixture)


def test_predict_passes_its_options_and_prints_the_summary_on_stderr(cli, tmp_path):
    r = cli("predict", str(tmp_path), "--model", "digits:2", "-o", str(tmp_path / "out.json"), "--format", "json",
            "--recursive", "--chunk-size", "100", "--jobs", "1")
    assert r.exit_code == 0, r.output
    (folder, model, output, fmt), kw = cli.client.args_of("predict")
    assert (folder, model, output, fmt) == (str(tmp_path), "digits:2", str(tmp_path / "out.json"), "json")
    assert kw["recursive"] and not kw["remote"] and kw["chunk_size"] == 100 and kw["processes"] == 1
    assert kw["prefetch"] is None  # one process: nothing to start early
    assert r.stderr.splitlines()[-1] == f"2 classified, 1 failed -> {tmp_path / 'out.json'} (6 images/s)"


def test_predict_json_summary(cli, tmp_path):
    r = cli("predict", str(tmp_path), "--json", "--jobs", "1")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"job_id": JOB, "classified": 2, "failed": 1, "output": "predictions.csv",
                                    "seconds": 0.5, "images_per_second": 6.0, "flagged": 0}


def test_predict_gallery_line(cli, tmp_path):
    cli.client.summary = PredictSummary(job_id=JOB, classified=3, failed=0, output="-", seconds=1.0,
                                        images_per_second=3.0, gallery=str(tmp_path / "s.png"))
    r = cli("predict", str(tmp_path), "-o", "-", "--gallery", str(tmp_path / "s.png"), "--jobs", "1")
    assert r.exit_code == 0, r.output
    assert f"gallery of 3 image(s) -> {tmp_path / 's.png'}" in r.stderr
    assert cli.client.args_of("predict")[1]["gallery"] == str(tmp_path / "s.png")


def test_nothing_classified_exits_1(cli, tmp_path):
    cli.client.summary = PredictSummary(job_id=JOB, classified=0, failed=4, output="p.csv", seconds=1.0,
                                        images_per_second=4.0)
    r = cli("predict", str(tmp_path), "--jobs", "1")
    assert r.exit_code == 1 and "0 classified, 4 failed" in r.stderr


def test_a_prefetch_starts_before_the_client_and_reaches_it(cli, tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("L", (28, 28), 255).save(tmp_path / f"{i}.png")
    r = cli("predict", str(tmp_path), "--jobs", "2", "--chunk-size", "2")
    assert r.exit_code == 0, r.output
    prefetch = cli.client.args_of("predict")[1]["prefetch"]
    assert prefetch is not None and prefetch.key[:3] == (str(tmp_path), False, 2)
    prefetch.close()


@pytest.mark.parametrize("args, message, code", [
    (["--format", "xml"], "--format must be csv or json, got 'xml'", 2),
    (["--chunk-size", "0"], "--chunk-size must be between 1 and 5000, got 0", 2),
    (["--jobs", "-1"], "--jobs must be 0 (automatic) or more, got -1", 2),
    (["--remote", "--gallery", "s.png"], "--gallery draws the images as they are preprocessed here", 2),
    (["--gallery", "/no/such/folder/s.png"], "the folder /no/such/folder does not exist", 2),
])
def test_bad_predict_options_are_refused_before_any_client(cli, tmp_path, args, message, code):
    r = cli("predict", str(tmp_path), *args)
    assert r.exit_code == code and r.stderr == f"error: {r.stderr[7:]}" and message in r.stderr
    assert cli.client.calls == []


def test_an_output_that_is_a_folder_is_refused(cli, tmp_path):
    r = cli("predict", str(tmp_path), "-o", str(tmp_path))
    assert r.exit_code == 2 and "is a folder; give a file name" in r.stderr and cli.client.calls == []


def test_an_unknown_model_is_one_line(cli, tmp_path):
    cli.client.fail["predict"] = NoSuchModel("no model named 'nope' (see `digitq models list`)")
    r = cli("predict", str(tmp_path), "--model", "nope", "--jobs", "1")
    assert r.exit_code == 2 and r.stderr == "error: no model named 'nope' (see `digitq models list`)\n"


def test_evaluate_table(cli):
    r = cli("evaluate", "--model", "digits")
    assert r.exit_code == 0, r.output
    assert cli.client.args_of("evaluate")[0] == (EvaluateRequest(model="digits"),)
    lines = r.stdout.splitlines()
    assert lines[0] == "digits:3 on mnist-test: accuracy 99.12% over 10000 images (loss 0.0312)"
    assert "rows: true digit, columns: predicted digit" in r.stdout and "accuracy" in lines[2]
    row9 = next(line for line in lines[3:] if line.split()[0] == "9")
    assert "90" in row9 and "99" in row9 and row9.rstrip().endswith("-")  # no examples of 9: "-"


def test_evaluate_json_and_a_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("evaluate", "--dataset", "mine", "--test-size", "100", "--json")
    assert r.exit_code == 0, r.output
    (req,), _ = cli.client.args_of("evaluate")
    assert req == EvaluateRequest(model="digits", dataset=os.path.join(str(tmp_path), "mine"), test_size=100)
    d = json.loads(r.stdout)
    assert set(d) == {"model", "dataset", "images", "accuracy", "loss", "per_class_accuracy", "confusion", "skipped"}


@pytest.mark.parametrize("args, message", [(["--test-size", "0"], "test_size must be between"),
                                           (["--model", "a/b"], "invalid model name")])
def test_bad_evaluate_input_exits_2(cli, args, message):
    r = cli("evaluate", *args)
    assert r.exit_code == 2 and message in r.stderr and cli.client.calls == []


def test_report_line_and_json(cli, tmp_path):
    r = cli("report", "digits:3", "-o", str(tmp_path / "rep"), "--timeout", "30")
    assert r.exit_code == 0, r.output
    assert cli.client.args_of("report") == ((ReportRequest(target="digits:3"), str(tmp_path / "rep")), {"timeout": 30.0})
    assert r.stdout == f"report of digits:3 -> {tmp_path / 'rep'}/ (curves.png, summary.md)\n"
    d = json.loads(cli("report", JOB, "--json").stdout)
    assert d == {"job_id": JOB, "model": "digits:3", "output": f"report-{JOB}", "files": ["curves.png", "summary.md"],
                 "worker_folder": "/w/report"}


@pytest.mark.parametrize("target", ["../etc", "a b", "digits:0", "x:y"])
def test_bad_report_targets_exit_2_before_any_client(cli, target):
    r = cli("report", target)
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and cli.client.calls == []


def test_a_report_output_that_is_a_file_is_refused(cli, tmp_path):
    (tmp_path / "f").write_text("x")
    r = cli("report", JOB, "-o", str(tmp_path / "f"))
    assert r.exit_code == 2 and "exists and is not a folder" in r.stderr and cli.client.calls == []
