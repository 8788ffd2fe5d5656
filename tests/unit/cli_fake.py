"""A stand-in Client for the CLI tests: it answers from canned values and records every call,
so a CliRunner test checks parsing, validation, exit codes and formatting in milliseconds, with
no broker. The `cli` fixture installs it as the client every command gets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digitq.client.api import JobStatus
from digitq.client.cli import app, output, session
from digitq.client.report import SavedReport
from digitq.common.schemas import EvaluateResult, PredictSummary

JOB = "0123456789abcdef0123456789abcdef"

TRAIN_RESULT = dict(job_id=JOB, state="SUCCESS", test_accuracy=0.9912, test_loss=0.0312,
                    per_class_accuracy=[0.99] * 10, confusion=[[1] * 10] * 10, epochs=2, wall_seconds=61.25,
                    train_seconds=50.0, model="digits:3", arch="cnn", model_path="/home/jobs/x/model.keras",
                    history=[{"epoch": 1, "seconds": 25.0, "loss": 0.2, "val_accuracy": 0.98, "images_per_second": 2200},
                             {"epoch": 2, "seconds": 25.0, "loss": 0.1, "val_accuracy": 0.99, "images_per_second": 2300,
                              "resumed": True}],
                    replicas=2, devices=["CPU x2"], train_images=55000, dataset="mnist", worker="h:1")

RECORD = {"name": "digits", "version": 3, "arch": "cnn", "test_accuracy": 0.9912, "promoted": True,
          "created": 1_700_000_000, "job_id": JOB, "path": "/home/jobs/x/model.keras"}


def evaluate_result(**kw) -> EvaluateResult:
    d = dict(model="digits:3", dataset="mnist-test", images=10000, accuracy=0.9912, loss=0.0312,
             per_class_accuracy=[0.99] * 9 + [None], confusion=[[d * 10 + c for c in range(10)] for d in range(10)])
    return EvaluateResult(**{**d, **kw})


@dataclass
class FakeClient:
    """Canned answers; `calls` holds (method, args, kwargs) in order; `fail` maps a method to the
    exception it raises."""

    calls: list = field(default_factory=list)
    fail: dict = field(default_factory=dict)
    train_result: dict = field(default_factory=lambda: dict(TRAIN_RESULT))
    statuses: dict = field(default_factory=dict)
    records: list = field(default_factory=lambda: [dict(RECORD)])
    worker_rows: list = field(default_factory=list)
    log_lines: list = field(default_factory=lambda: ["start", "epoch 1"])
    summary: PredictSummary | None = None
    stack: dict = field(default_factory=lambda: {
        "home": "/h", "redis": {"running": True, "pid": 11, "address": "127.0.0.1:6390"},
        "worker": {"running": False, "pid": None, "log": "/h/local/worker.log"}})

    def _call(self, method, /, *args, **kwargs):
        self.calls.append((method, args, kwargs))
        if method in self.fail:
            raise self.fail[method]

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def args_of(self, name: str):
        return next((a, k) for n, a, k in self.calls if n == name)

    def connect(self):
        self._call("connect")
        return self

    # --- jobs
    def submit_train(self, request, parallel=0):
        self._call("submit_train", request, parallel=parallel)
        return JOB

    def wait(self, job_id, on_progress=None, timeout=None):
        self._call("wait", job_id, timeout=timeout)
        if on_progress:
            on_progress(JobStatus(job_id, "SUCCESS"))
        return {**self.train_result, "kind": "train", "name": "digits", "submitted": 1_700_000_000.0}

    def status(self, job_id):
        self._call("status", job_id)
        return self.statuses.get(job_id) or JobStatus(job_id, "SUCCESS", "train", "digits", 1_700_000_000.0,
                                                      result=dict(self.train_result))

    def jobs(self, limit=20, kind=None):
        self._call("jobs", limit, kind=kind)
        rows = [self.status(JOB), JobStatus("f" * 32, "PENDING", "predict", "digits", None)]
        return [r for r in rows if kind is None or r.kind == kind]

    def cancel(self, job_id):
        self._call("cancel", job_id)
        return JobStatus(job_id, "REVOKED")

    def workers(self):
        self._call("workers")
        return self.worker_rows

    def follow_logs(self, job_id, follow=False):
        self._call("follow_logs", job_id, follow=follow)
        yield from self.log_lines

    # --- predict, evaluate, report
    def predict(self, folder, model="digits", output="predictions.csv", fmt="csv", **kw):
        self._call("predict", folder, model, output, fmt, **kw)
        if kw.get("on_total"):
            kw["on_total"](3)
        if kw.get("on_row"):
            for done in (1, 2, 3):
                kw["on_row"](done)
        return self.summary or PredictSummary(job_id=JOB, classified=2, failed=1, output=output, seconds=0.5,
                                              images_per_second=6.0)

    def evaluate(self, request):
        self._call("evaluate", request)
        return evaluate_result(model=f"{request.model}:3" if ":" not in request.model else request.model,
                               dataset=request.dataset)

    def report(self, request, output=None, timeout=600):
        self._call("report", request, output, timeout=timeout)
        return SavedReport(JOB, "digits:3", output or f"report-{JOB}", ["curves.png", "summary.md"], "/w/report")

    # --- models
    def list_models(self):
        self._call("list_models")
        return self.records

    def show_model(self, ref):
        self._call("show_model", ref)
        return self.records[0]

    def promote_model(self, ref):
        self._call("promote_model", ref)
        return self.records[0]

    def delete_model(self, ref):
        self._call("delete_model", ref)
        return self.records[0]

    def combine_models(self, refs, name="ensemble", evaluate=True):
        self._call("combine_models", refs, name=name, evaluate=evaluate)
        rec = {"name": name, "version": 1, "members": ["a", "b", "c"], "combined_from": refs,
               "test_accuracy": 0.9951 if evaluate else None, "test_loss": 0.02 if evaluate else None}
        return rec

    def export_model(self, ref, directory):
        self._call("export_model", ref, directory)
        return self.records[0], Path(directory).resolve()

    # --- volume and stack
    def tensorboard_logdir(self, target=None):
        self._call("tensorboard_logdir", target)
        return Path("/h/jobs") / (f"{target}/tensorboard" if target else "")

    def local_up(self):
        self._call("local_up")
        return self.stack

    def local_down(self):
        self._call("local_down")
        return self.stack

    def local_status(self):
        self._call("local_status")
        return self.stack


class Cli:
    """Runs `digitq ARGS...` in-process against `client`."""

    def __init__(self, client: FakeClient):
        self.client = client
        self.runner = CliRunner()

    def __call__(self, *args: str):
        return self.runner.invoke(app, list(args))


@pytest.fixture
def cli(monkeypatch) -> Cli:
    """The CLI against a FakeClient, its tables drawn 80 columns wide whatever terminal (or none)
    runs the tests: the consoles are made at import, so COLUMNS set later would not reach them."""
    for console in (output.out, output.err):
        monkeypatch.setattr(console, "_width", 80)
    fake = FakeClient()
    monkeypatch.setattr(session, "get_client", lambda quiet=False: fake)
    return Cli(fake)
