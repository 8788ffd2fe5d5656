"""What a worker tells the others: its announcement (devices, queues, current job) and each
job's log lines, both in Redis so `digitq workers` and `digitq logs` work from any machine."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from pathlib import Path

from digitq.common.errors import DigitqError
from digitq.common.announcements import announced
from digitq.common.names import log_key, worker_key

ANNOUNCE_INTERVAL = 10.0
"""Seconds between two refreshes of a worker's announcement."""

ANNOUNCE_TTL = 35
"""Seconds an announcement outlives its worker's last refresh."""

MAX_LOG_LINES = 5000
"""Lines kept per job (the oldest go first)."""

VOLUME_MARKER = ".digitq-volume-id"
"""File in DIGITQ_HOME holding the shared volume's id (made by the first worker that uses it);
every worker announces it, and a worker whose DIGITQ_HOME holds another id than the live
workers' refuses to start: it could not read their jobs' folders and models."""


def volume_id(home: Path) -> str:
    """The id in `home`'s VOLUME_MARKER, written first if there is none (atomically: two workers
    starting at once on a fresh volume agree)."""
    import uuid

    marker = Path(home) / VOLUME_MARKER
    Path(home).mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(uuid.uuid4().hex + "\n")
    for _ in range(50):  # another worker may be writing it this very moment
        text = marker.read_text().strip()
        if text:
            return text
        time.sleep(0.02)
    raise DigitqError(f"{marker} is empty: delete it and start the worker again")


def check_shared_volume(r, node: str, volume: str, home: Path) -> None:
    """DigitqError (one line) when a live worker other than `node` announces another volume id
    than `volume`: this worker's DIGITQ_HOME is not the shared volume the others use."""
    for info in announced(r):
        if info.get("node") != node and info.get("volume") and info["volume"] != volume:
            raise DigitqError(
                f"DIGITQ_HOME {home} is not the shared volume the other workers use ({info['node']} on "
                f"{info.get('host')} has volume id {info['volume']}, this one {volume}, see {VOLUME_MARKER}): "
                "mount the shared volume there")


class Presence:
    """Keeps `digitq:worker:<node>` fresh from a daemon thread while the worker runs."""

    def __init__(self, r, node: str, queues: list[str], devices: dict, volume: str | None = None):
        self.r = r
        self.info = {
            "volume": volume,
            "node": node, "host": socket.gethostname(), "pid": os.getpid(), "queues": queues,
            "device_type": devices.get("device_type"), "gpus": devices.get("gpus", []),
            "replicas": devices.get("replicas"), "tensorflow": devices.get("tensorflow"),
            "started": time.time(), "current_job": None, "jobs_done": 0,
        }
        self._stop = threading.Event()

    def announce(self) -> None:
        self.info["last_seen"] = time.time()
        try:
            self.r.set(worker_key(self.info["node"]), json.dumps(self.info), ex=ANNOUNCE_TTL)
        except Exception as exc:  # a broker blip: the next beat retries
            logging.getLogger("digitq.worker").debug("announce failed: %s", exc)

    def start(self) -> None:
        self.announce()
        threading.Thread(target=self._run, name="presence", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(ANNOUNCE_INTERVAL):
            self.announce()

    def job_started(self, job_id: str, task: str) -> None:
        self.info["current_job"] = {"job_id": job_id, "task": task, "since": time.time()}
        self.announce()

    def job_finished(self) -> None:
        self.info["current_job"] = None
        self.info["jobs_done"] += 1
        self.announce()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.r.delete(worker_key(self.info["node"]))
        except Exception:
            pass


class JobLogHandler(logging.Handler):
    """Appends the log records emitted while a job runs to `digitq:log:<job_id>`."""

    def __init__(self, r, job_id: str, ttl: int):
        super().__init__(level=logging.INFO)
        self.r = r
        self.key = log_key(job_id)
        self.ttl = ttl
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            pipe = self.r.pipeline()
            pipe.rpush(self.key, self.format(record))
            pipe.ltrim(self.key, -MAX_LOG_LINES, -1)
            pipe.expire(self.key, self.ttl)
            pipe.execute()
        except Exception:  # logging must never break a job
            pass
