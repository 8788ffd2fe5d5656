"""`workers`, `logs`, `tensorboard`, `worker` and `local up|down|status` against a stand-in
Client; the commands that replace this process (`worker`, `tensorboard --start`) hand their
command line to `local.replace_process`, replaced here."""

from __future__ import annotations

import importlib.util
import json
import sys
import time

import pytest

from digitq.client.cli import local
from digitq.common.errors import LocalStackError, NoSuchJob
from tests.unit.cli_fake import JOB, cli  # noqa: F401  (the fixture)


@pytest.fixture
def replaced(monkeypatch) -> list:
    argvs = []
    monkeypatch.setattr(local, "replace_process", argvs.append)
    return argvs


def test_workers_table_json_and_none(cli):
    r = cli("workers")
    assert r.exit_code == 0 and "no live workers (they announce themselves every 10 s)" in r.stderr
    cli.client.worker_rows = [
        {"node": "w1@a", "queues": ["train", "predict"], "gpus": [], "replicas": 2, "tensorflow": "2.20.0",
         "current_job": {"job_id": JOB, "task": "digitq.train", "since": time.time() - 12}, "jobs_done": 4},
        {"node": "w2@b", "queues": ["predict"], "gpus": ["GPU:0", "GPU:1"], "tensorflow": "2.20.0"}]
    r = cli("workers")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["node", "queues", "devices", "current", "job"]
    assert max(map(len, lines)) <= 80
    assert lines[1].split() == ["w1@a", "train,predict", "CPU", "x2", JOB]
    assert lines[2].split() == ["4", "done", "TensorFlow", "2.20.0", "train,", "12", "s"]
    assert lines[3].split() == ["w2@b", "predict", "GPU:0,", "GPU:1", "-"]
    assert r.stderr == ""
    assert json.loads(cli("workers", "--json").stdout) == cli.client.worker_rows


def test_logs_print_each_line_and_pass_follow(cli):
    r = cli("logs", JOB, "-f")
    assert r.exit_code == 0 and r.stdout == "start\nepoch 1\n"
    assert cli.client.args_of("follow_logs") == ((JOB,), {"follow": True})
    cli.client.fail["follow_logs"] = NoSuchJob(f"no job {JOB} (it never existed, or its record expired)")
    r = cli("logs", JOB)
    assert r.exit_code == 2 and r.stderr.startswith(f"error: no job {JOB}")


def test_tensorboard_prints_the_command(cli):
    assert cli("tensorboard").stdout == "tensorboard --logdir /h/jobs --port 6006\n"
    assert cli("tensorboard", JOB, "--port", "7000").stdout == f"tensorboard --logdir /h/jobs/{JOB}/tensorboard --port 7000\n"


def test_tensorboard_start_replaces_the_process(cli, replaced, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: f"/bin/{name}")
    assert cli("tensorboard", "--start").exit_code == 0
    assert replaced == [["/bin/tensorboard", "--logdir", "/h/jobs", "--port", "6006"]]
    monkeypatch.setattr("shutil.which", lambda name: None)
    r = cli("tensorboard", "--start")
    assert r.exit_code == 1 and "tensorboard is not installed here" in r.stderr


def test_worker_runs_python_m_digitq_worker(cli, replaced, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    r = cli("worker", "--queues", "predict", "--concurrency", "2", "--hostname", "w1", "--gpus", "0,1")
    assert r.exit_code == 0, r.output
    assert replaced == [[sys.executable, "-m", "digitq.worker", "--queues", "predict", "--concurrency", "2",
                         "--loglevel", "INFO", "--hostname", "w1", "--gpus", "0,1"]]
    assert cli.client.calls == []  # it needs no broker here


def test_worker_without_tensorflow_is_one_line(cli, replaced, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    r = cli("worker")
    assert r.exit_code == 1 and r.stderr == "error: the worker needs TensorFlow: pip install 'digitq[worker]'\n"
    assert replaced == []


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_local_text_and_json(cli, command):
    r = cli("local", command)
    assert r.exit_code == 0, r.output
    assert r.stdout == "home    /h\nredis   running  pid 11  127.0.0.1:6390\nworker  stopped\n"
    assert cli.client.names() == [f"local_{command}"]
    assert json.loads(cli("local", command, "--json").stdout) == cli.client.stack


def test_local_errors_are_one_line(cli):
    cli.client.fail["local_up"] = LocalStackError("no redis-server found: install Redis")
    r = cli("local", "up")
    assert r.exit_code == 1 and r.stderr == "error: no redis-server found: install Redis\n"
