"""Fixtures with real parts: a redis-server of the test's own on a free port, real worker
processes, and the canonical MNIST files from DIGITQ_DATA_DIR (default ../shared/data)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from digitq.worker.devices import prefer_onednn
from tests.processes import RedisServer, WorkerProcess

prefer_onednn()  # what the worker's main does: tests that train in processes of their own use the same CPU kernels

REPO = Path(__file__).resolve().parent.parent


def _data_dir() -> Path:
    raw = os.environ.get("DIGITQ_DATA_DIR") or str(REPO.parent / "shared" / "data")
    return Path(raw).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if not (d / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST files not found in {d}/mnist (set DIGITQ_DATA_DIR)")
    return d


@pytest.fixture
def home(tmp_path, monkeypatch, data_dir) -> Path:
    """A fresh DIGITQ_HOME, with DIGITQ_DATA_DIR at the shared MNIST files and no broker set."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("DIGITQ_HOME", str(h))
    monkeypatch.setenv("DIGITQ_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DIGITQ_BROKER_URL", raising=False)
    monkeypatch.delenv("DIGITQ_RESULT_BACKEND", raising=False)
    return h


def _need_redis():
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not on PATH")


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory):
    """One redis-server for the session's integration tests (tests that kill Redis make their own)."""
    _need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of this test's own, with AOF on, that the test may kill and restart."""
    _need_redis()
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory, data_dir) -> Path:
    return tmp_path_factory.mktemp("shared-home")


@pytest.fixture(scope="session")
def shared_worker(shared_redis, shared_home, data_dir):
    """A real worker process (2 CPU replicas) on the session's Redis."""
    from tests.processes import free_port

    w = WorkerProcess(shared_redis.url, shared_home, data_dir, name="w1", cpu_replicas=2,
                      extra_env={"DIGITQ_METRICS_PORT": str(free_port())})
    w.start()
    w.wait_ready()
    yield w
    w.stop()


@pytest.fixture
def client_env(shared_redis, shared_home, data_dir, monkeypatch):
    """Environment for a client talking to the shared worker."""
    monkeypatch.setenv("DIGITQ_BROKER_URL", shared_redis.url)
    monkeypatch.setenv("DIGITQ_HOME", str(shared_home))
    monkeypatch.setenv("DIGITQ_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DIGITQ_RESULT_BACKEND", raising=False)
    return dict(os.environ)


@pytest.fixture(scope="session")
def service_env(shared_redis, shared_home, data_dir) -> dict:
    """What `client_env` sets, for session- and module-scoped fixtures (client_env is per test)."""
    env = dict(os.environ, DIGITQ_BROKER_URL=shared_redis.url, DIGITQ_HOME=str(shared_home),
               DIGITQ_DATA_DIR=str(data_dir))
    env.pop("DIGITQ_RESULT_BACKEND", None)
    return env


SMALL_MODEL_RECIPE = ["--epochs", "1", "--train-size", "3000", "--validation-size", "300", "--test-size", "500",
                      "--batch-size", "32"]
"""The session's one shared model: 3,000 images, 1 epoch, scored on the first 500 test images."""


@pytest.fixture(scope="session")
def trained_model(shared_worker, service_env):
    """One small model trained once for the whole session through the real CLI on the shared
    worker, registered as NAME:1. Tests that need more versions of a name train their own."""
    import json
    import uuid
    from types import SimpleNamespace

    from tests.helpers import ok
    from tests.processes import run_cli

    name = f"shared-{uuid.uuid4().hex[:8]}"
    proc = ok(run_cli(["submit-train", "--json", "--name", name, *SMALL_MODEL_RECIPE], service_env, timeout=600))
    res = json.loads(proc.stdout)
    assert res["state"] == "SUCCESS" and res["model"] == f"{name}:1", res
    return SimpleNamespace(name=name, result=res, test_size=500)
