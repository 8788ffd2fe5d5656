"""The parts of Client that need no broker: it connects only when a call needs the broker, and
its local operations (the embedded stack's state, TensorBoard folders, the export subprocess)
work without one."""

from __future__ import annotations

import subprocess

import pytest

from digitq.client.api import Client
from digitq.common.errors import BrokerUnavailable, DigitqError
from digitq.common.settings import load_settings

JOB = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITQ_HOME", str(tmp_path))
    monkeypatch.delenv("DIGITQ_BROKER_URL", raising=False)
    monkeypatch.delenv("DIGITQ_RESULT_BACKEND", raising=False)
    return load_settings()


def test_a_client_connects_only_when_a_call_needs_the_broker(settings):
    client = Client(settings=settings, start_local=False)
    assert client.local_status()["redis"]["running"] is False  # no broker needed, none started
    assert client.tensorboard_logdir() == settings.jobs_dir
    with pytest.raises(BrokerUnavailable, match="no broker: set DIGITQ_BROKER_URL"):
        client.jobs()


def test_an_unreachable_broker_is_one_line_without_its_password(settings):
    client = Client("redis://:secret@127.0.0.1:1/0", settings)
    with pytest.raises(BrokerUnavailable) as exc:
        client.ping()
    assert "secret" not in str(exc.value) and "redis://***@127.0.0.1:1/0" in str(exc.value)


def test_tensorboard_folder_of_a_job_on_the_volume(settings):
    (settings.jobs_dir / JOB).mkdir(parents=True)
    assert Client(settings=settings, start_local=False).tensorboard_logdir(JOB) == settings.jobs_dir / JOB / "tensorboard"


class ExportClient(Client):
    def show_model(self, ref):
        return {"name": "digits", "version": 2, "path": "/nowhere/model.keras"}


def test_export_runs_the_worker_module_in_a_subprocess(settings, tmp_path, monkeypatch):
    seen = {}

    def run(argv, input, **kw):
        seen.update(argv=argv, input=input)
        return subprocess.CompletedProcess(argv, 0, stdout=f"{tmp_path / 'saved'}\n", stderr="tf noise\n")

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    rec, path = ExportClient(settings=settings).export_model("digits", str(tmp_path / "saved"))
    assert seen["argv"][1:] == ["-m", "digitq.worker.export", str(tmp_path / "saved")]
    assert '"path": "/nowhere/model.keras"' in seen["input"]  # the record travels on stdin
    assert path == tmp_path / "saved" and rec["version"] == 2


def test_export_errors_are_the_workers_one_line(settings, tmp_path, monkeypatch):
    stderr = "2026 tensorflow noise\nerror: the model file /nowhere/model.keras is not reachable here\n"
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 1, "", stderr))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    with pytest.raises(DigitqError, match="^the model file /nowhere/model.keras is not reachable here$"):
        ExportClient(settings=settings).export_model("digits", str(tmp_path / "saved"))
    (tmp_path / "exists").mkdir()
    with pytest.raises(DigitqError, match="already exists"):
        ExportClient(settings=settings).export_model("digits", str(tmp_path / "exists"))


def test_export_without_tensorflow_is_one_line(settings, tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(DigitqError, match="export needs TensorFlow here"):
        ExportClient(settings=settings).export_model("digits", str(tmp_path / "saved"))
