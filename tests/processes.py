"""Real processes for the tests: redis-server and digitq workers, started and killed for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from digitq.common.redis_client import make_redis

READY_TIMEOUT = 90.0
"""Seconds a worker may take to import TensorFlow and connect (2 busy cores can be slow)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server on a free loopback port with a password, data under `folder`."""

    def __init__(self, folder: Path, appendonly: bool = False, password: str = "test-secret",
                 extra_args: tuple[str, ...] = ()):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.appendonly = appendonly
        self.extra_args = tuple(extra_args)  # e.g. ("--replicaof", "127.0.0.1", "6379")
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return make_redis(self.url)

    def start(self) -> None:
        log = open(self.folder / "redis.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password,
             "--dir", str(self.folder), "--appendonly", "yes" if self.appendonly else "no", "--save", "",
             "--appendfsync", "always", "--masterauth", self.password, *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start; see {self.folder / 'redis.log'}")
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class SentinelCluster:
    """A Redis master, one replica and three sentinels (`redis-server CONF --sentinel`) on free
    loopback ports, all with one password; the sentinels call the master MASTER and declare it
    down after `down_after_ms` without an answer."""

    MASTER = "digitq"

    def __init__(self, folder: Path, password: str = "test-secret", down_after_ms: int = 1000,
                 failover_timeout_ms: int = 5000):
        self.folder = Path(folder)
        self.password = password
        self.master = RedisServer(self.folder / "master", password=password)
        self.replica = RedisServer(self.folder / "replica", password=password,
                                   extra_args=("--replicaof", "127.0.0.1", str(self.master.port)))
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.sentinels: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """Celery's and digitq's Sentinel URL: every sentinel, the password on the first."""
        return ";".join(f"sentinel://{f':{self.password}@' if i == 0 else ''}127.0.0.1:{p}/0"
                        for i, p in enumerate(self.sentinel_ports))

    def env(self) -> dict:
        """What a worker or client needs besides DIGITQ_BROKER_URL = url."""
        return {"DIGITQ_SENTINEL_MASTER": self.MASTER, "DIGITQ_SENTINEL_PASSWORD": self.password}

    def sentinel(self, i: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.sentinel_ports[i], password=self.password, socket_timeout=2)

    def master_port(self) -> int | None:
        """The master's port as the sentinels see it now (None while they cannot say)."""
        for i in range(len(self.sentinel_ports)):
            try:
                addr = self.sentinel(i).sentinel_get_master_addr_by_name(self.MASTER)
                if addr:
                    return int(addr[1])
            except redis.exceptions.RedisError:
                continue
        return None

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        for i, port in enumerate(self.sentinel_ports):
            folder = self.folder / f"sentinel{i}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {folder}", f"requirepass {self.password}",
                f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master.port} 2",
                f"sentinel auth-pass {self.MASTER} {self.password}",
                f"sentinel sentinel-pass {self.password}",
                f"sentinel down-after-milliseconds {self.MASTER} {self.down_after_ms}",
                f"sentinel failover-timeout {self.MASTER} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {self.MASTER} 1", ""]))
            log = open(folder / "sentinel.log", "ab")
            self.sentinels.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 30
        while True:  # every sentinel knows the master, its replica and the other sentinels
            try:
                ready = all(
                    int(m["num-slaves"]) >= 1 and int(m["num-other-sentinels"]) >= 2
                    for m in (self.sentinel(i).sentinel_master(self.MASTER) for i in range(3)))
            except redis.exceptions.RedisError:
                ready = False
            if ready:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sentinels did not see each other; see {self.folder}/sentinel*/sentinel.log")
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.master.stop()
        self.replica.stop()


class WorkerProcess:
    """`python -m digitq.worker` as a real subprocess, its output in `<home>/worker-<name>.log`."""

    def __init__(self, broker_url: str, home: Path, data_dir: Path, name: str = "w1", cpu_replicas: int = 1,
                 queues: str = "train,predict", extra_env: dict | None = None):
        self.broker_url = broker_url
        self.home = Path(home)
        self.data_dir = Path(data_dir)
        self.name = name
        self.cpu_replicas = cpu_replicas
        self.queues = queues
        self.extra_env = extra_env or {}
        self.proc = None
        self.log_path = self.home / f"worker-{name}.log"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "DIGITQ_BROKER_URL": self.broker_url,
            "DIGITQ_HOME": str(self.home),
            "DIGITQ_DATA_DIR": str(self.data_dir),
            "DIGITQ_CPU_REPLICAS": str(self.cpu_replicas),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        })
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "digitq.worker", "--queues", self.queues, "--hostname", f"{self.name}@test",
             "--loglevel", "INFO"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until Celery logs that the worker is ready (it has imported TensorFlow by then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if " ready." in self.log()[self._log_start:]:  # this start's lines, not an earlier run's
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, as a machine losing power would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def run_cli(args: list[str], env: dict, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real `digitq` command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "digitq.client", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, input=input)
