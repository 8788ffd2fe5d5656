"""The worker sets itself up when it starts, never at import: importing any digitq module builds
no client, needs no broker and leaves TensorFlow's kernel choice alone; `digitq-worker`'s main
chooses the kernels before anything imports TensorFlow and registers digitq's tasks on its app."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from unittest import mock

import pytest

from digitq.common.errors import DigitqError
from digitq.common.names import EVALUATE_TASK, LIST_TASK, PREDICT_TASK, REPORT_TASK, TRAIN_TASK
from digitq.common.settings import load_settings

UNREACHABLE = "redis://127.0.0.1:1/0"


def _fresh_python(code: str, tmp_path, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_ENABLE_ONEDNN_OPTS", "DIGITQ_BROKER_URL", "DIGITQ_RESULT_BACKEND")}
    env.update(DIGITQ_HOME=str(tmp_path / "home"), TF_CPP_MIN_LOG_LEVEL="3", **env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_importing_every_digitq_module_has_no_side_effects(tmp_path):
    """No broker configured, no embedded stack, every socket connect refused: every module of
    digitq.common, digitq.worker and digitq.client still imports, starts no thread, and leaves
    TF_ENABLE_ONEDNN_OPTS unset."""
    code = (
        "import importlib, os, pkgutil, socket, sys, threading\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('a digitq import opened a connection')\n"
        "socket.socket.connect = socket.socket.connect_ex = socket.create_connection = refuse\n"
        "import digitq.common, digitq.worker, digitq.client\n"
        "names = []\n"
        "for pkg in (digitq.common, digitq.worker, digitq.client):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not m.name.endswith('__main__'):\n"
        "            importlib.import_module(m.name); names.append(m.name)\n"
        "threads = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]\n"
        "print(len(names), os.environ.get('TF_ENABLE_ONEDNN_OPTS'), threads)\n"
        "import digitq.worker.__main__\n"  # its main() runs only as a script
        "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))\n"
    )
    proc = _fresh_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, onednn, threads = proc.stdout.splitlines()[-2].split(" ", 2)
    assert int(count) >= 25  # every module of the three packages
    assert onednn == "None", "importing a digitq module chose TensorFlow's CPU kernels"
    assert threads == "[]"
    assert proc.stdout.splitlines()[-1] == "None"


def test_the_worker_main_chooses_the_cpu_kernels_before_tensorflow_starts(tmp_path):
    """main() sets TF_ENABLE_ONEDNN_OPTS (x86-64) first thing: even a start that fails on its
    arguments has chosen the kernels, and has not imported TensorFlow."""
    code = (
        "import os, sys\n"
        "from digitq.worker.__main__ import main\n"
        "rc = main(['--concurrency', '0'])\n"
        "print(rc, os.environ.get('TF_ENABLE_ONEDNN_OPTS'), 'tensorflow' in sys.modules)\n"
    )
    proc = _fresh_python(code, tmp_path, DIGITQ_BROKER_URL=UNREACHABLE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = "1" if platform.machine().lower() in ("x86_64", "amd64") else "None"
    assert proc.stdout.split() == ["1", want, "False"]
    assert "error: --concurrency must be >= 1, got 0" in proc.stderr


def test_the_worker_without_a_broker_says_how_to_get_one(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "digitq.worker"], capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DIGITQ_HOME": str(tmp_path / "home")})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: set DIGITQ_BROKER_URL (redis://...) or start the embedded stack with `digitq local up`")


@pytest.fixture
def worker_app(tmp_path, monkeypatch):
    from digitq.worker.app import WorkerContext, make_worker_app

    monkeypatch.setenv("DIGITQ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DIGITQ_BROKER_URL", UNREACHABLE)
    ctx = WorkerContext.connect(load_settings(), ["train", "predict"])
    ctx.redis = mock.MagicMock()  # no Redis here: the hooks' writes go nowhere
    return make_worker_app(ctx), ctx


def test_the_worker_app_has_digitqs_tasks_and_the_long_job_settings(worker_app):
    app, ctx = worker_app
    names = {TRAIN_TASK, PREDICT_TASK, LIST_TASK, EVALUATE_TASK, REPORT_TASK}
    assert names <= set(app.tasks)
    assert ctx.broker_url == UNREACHABLE and ctx.worker_id.endswith(f":{os.getpid()}")
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_reject_on_worker_lost and app.conf.accept_content == ["json"]

    from digitq.common.celery_app import make_celery

    other = make_celery(ctx.settings, UNREACHABLE)  # the client's app: no tasks of the worker's
    assert not names & set(other.tasks)


def test_the_job_hooks_act_for_their_own_app_only(worker_app):
    """task_prerun/postrun add and remove the job's log handler for this app's tasks; a task of
    another app in the same process leaves them alone."""
    from celery import signals

    from digitq.common.celery_app import make_celery
    from digitq.worker.presence import JobLogHandler

    app, ctx = worker_app
    task = app.tasks[PREDICT_TASK]
    root = logging.getLogger("digitq")
    signals.task_prerun.send(sender=task, task_id="job-1", task=task)
    assert isinstance(ctx.job_log, JobLogHandler) and ctx.job_log in root.handlers
    handler = ctx.job_log
    signals.task_postrun.send(sender=task, task_id="job-1", task=task, state="SUCCESS")
    assert ctx.job_log is None and handler not in root.handlers

    other = make_celery(ctx.settings, UNREACHABLE)

    def elsewhere():
        pass

    foreign = other.task(name="elsewhere", shared=False, lazy=False)(elsewhere)
    signals.task_prerun.send(sender=foreign, task_id="job-2", task=foreign)
    assert ctx.job_log is None


def test_no_broker_is_a_one_line_error(tmp_path, monkeypatch):
    from digitq.worker.app import WorkerContext

    monkeypatch.setenv("DIGITQ_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DIGITQ_BROKER_URL", raising=False)
    with pytest.raises(DigitqError, match="set DIGITQ_BROKER_URL"):
        WorkerContext.connect(load_settings())
