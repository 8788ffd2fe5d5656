"""What a worker tells the others: its announcement (devices, queues, current job) and each
job's log lines, both in Redis so `digitq workers` and `digitq logs` work from any machine."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from digitq.common.names import log_key, worker_key

ANNOUNCE_INTERVAL = 10.0
"""Seconds between two refreshes of a worker's announcement."""

ANNOUNCE_TTL = 35
"""Seconds an announcement outlives its worker's last refresh."""

MAX_LOG_LINES = 5000
"""Lines kept per job (the oldest go first)."""


class Presence:
    """Keeps `digitq:worker:<node>` fresh from a daemon thread while the worker runs."""

    def __init__(self, r, node: str, queues: list[str], devices: dict):
        self.r = r
        self.info = {
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
