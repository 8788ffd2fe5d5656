"""The client's Python API: submit jobs by task name, read their state, wait, list and cancel.

    client = connect()                      # DIGITQ_BROKER_URL, else the embedded stack
    job_id = client.submit_train(TrainRequest(epochs=2))
    result = client.wait(job_id, on_progress=print)

Job state is read raw from the result backend (JSON), so reading a failure never imports the
worker's exception classes.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import redis

from digitq.common.celery_app import make_celery
from digitq.common.errors import BrokerUnavailable, DigitqError, JobCancelled, JobFailed, NoSuchJob
from digitq.common.names import (
    FINISHED_STATES, JOBS_INDEX_KEY, TRAIN_QUEUE, TRAIN_TASK, WORKER_KEY_PREFIX, JobState, cancel_key, job_key, log_key,
)
from digitq.common.schemas import TrainRequest, check_job_id
from digitq.common.settings import Settings, load_settings

CONNECT_TIMEOUT = 3.0
"""Seconds to wait for the broker before calling it unreachable."""

TASK_META_PREFIX = "celery-task-meta-"


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


@dataclass
class JobStatus:
    job_id: str
    state: str
    kind: str | None = None
    name: str | None = None
    submitted: float | None = None
    progress: dict | None = None  # the latest PROGRESS report while it runs
    result: dict | None = None  # on SUCCESS
    error: str | None = None  # on FAILURE / REVOKED

    def to_dict(self) -> dict:
        d = {"job_id": self.job_id, "state": self.state, "kind": self.kind, "name": self.name,
             "submitted": self.submitted}
        if self.progress is not None:
            d["progress"] = self.progress
        if self.error is not None:
            d["error"] = self.error
        if self.result is not None:  # the result's own fields (a TrainResult's job_id and state agree)
            d.update({k: v for k, v in self.result.items() if k not in d})
        return d


class Client:
    """A connection to one digitq broker (Redis)."""

    def __init__(self, broker_url: str, settings: Settings | None = None):
        self.settings = settings or load_settings()
        self.broker_url = broker_url
        self.redis = redis.Redis.from_url(broker_url, socket_connect_timeout=CONNECT_TIMEOUT,
                                          socket_timeout=30, retry_on_timeout=True, health_check_interval=30)
        self._app = None

    @property
    def app(self):
        if self._app is None:
            self._app = make_celery(self.settings, self.broker_url)
        return self._app

    def ping(self) -> None:
        try:
            self.redis.ping()
        except redis.exceptions.AuthenticationError as exc:
            raise BrokerUnavailable(f"the broker at {redact(self.broker_url)} refused the password: {exc}") from None
        except redis.exceptions.RedisError as exc:
            raise BrokerUnavailable(f"cannot reach the broker at {redact(self.broker_url)}: {exc}") from None

    # --- submit --------------------------------------------------------------------------
    def record_job(self, job_id: str, kind: str, name: str, request: dict) -> None:
        """Add a job to the index that `digitq jobs` lists."""
        now = time.time()
        ttl = self.settings.result_ttl
        pipe = self.redis.pipeline()
        pipe.hset(job_key(job_id), mapping={"kind": kind, "name": name, "submitted": now, "request": json.dumps(request)})
        pipe.expire(job_key(job_id), ttl)
        pipe.zadd(JOBS_INDEX_KEY, {job_id: now})
        pipe.zremrangebyscore(JOBS_INDEX_KEY, 0, now - ttl)
        pipe.execute()

    def finish_job(self, job_id: str, state: str, result) -> None:
        """Store the final state of a job the client itself ran (a predict batch of many tasks)."""
        try:
            if state == JobState.SUCCESS.value:
                self.app.backend.store_result(job_id, result, state)
            else:
                self.app.backend.mark_as_failure(job_id, DigitqError(str(result)))
        except redis.exceptions.RedisError:
            pass  # only `digitq jobs` would miss it

    def _submit(self, task: str, queue: str, payload: dict, kind: str, name: str) -> str:
        job_id = uuid.uuid4().hex
        self.record_job(job_id, kind, name, payload)
        self.app.send_task(task, args=[payload], task_id=job_id, queue=queue)
        return job_id

    def call(self, task: str, payload: dict, queue: str, timeout: float = 3600) -> dict:
        """Run a task to completion (used for short jobs: evaluate, list) and return its result."""
        job_id = uuid.uuid4().hex
        self.app.send_task(task, args=[payload], task_id=job_id, queue=queue)
        return self.wait_result(job_id, timeout)

    def wait_result(self, job_id: str, timeout: float = 3600, poll: float = 0.01,
                    on_poll: Callable[[], None] | None = None) -> dict:
        """The result of a task that is not in the jobs index (a predict chunk, a listing);
        `on_poll` runs between two looks (the predict pipeline sends chunks then)."""
        deadline = time.monotonic() + timeout
        delay = poll
        while True:
            try:
                meta = self._meta(job_id)
            except redis.exceptions.ConnectionError:
                meta = None
            if meta:
                state = meta.get("status")
                if state == JobState.SUCCESS.value:
                    return meta.get("result")
                if state in (JobState.FAILURE.value, JobState.REVOKED.value):
                    raise JobFailed(f"task {job_id} failed: {_error_text(meta.get('result')) or state}")
            if time.monotonic() > deadline:
                raise DigitqError(f"task {job_id} did not finish within {timeout:.0f} s (is a worker serving the predict queue?)")
            if on_poll:
                on_poll()
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)  # a GET on Redis costs ~0.1 ms: poll often

    def submit_train(self, request: TrainRequest) -> str:
        """Queue a training job; returns its job id."""
        request.check()
        return self._submit(TRAIN_TASK, TRAIN_QUEUE, request.to_dict(), "train", request.name)

    # --- read ------------------------------------------------------------------------------
    def _meta(self, job_id: str) -> dict | None:
        raw = self.redis.get(TASK_META_PREFIX + job_id)
        return json.loads(raw) if raw else None

    def status(self, job_id: str) -> JobStatus:
        check_job_id(job_id)
        info = {k.decode(): v.decode() for k, v in self.redis.hgetall(job_key(job_id)).items()}
        meta = self._meta(job_id)
        if meta is None and not info:
            raise NoSuchJob(f"no job {job_id} (it never existed, or its record expired)")
        st = JobStatus(job_id, meta["status"] if meta else JobState.PENDING.value, info.get("kind"),
                       info.get("name"), float(info["submitted"]) if "submitted" in info else None)
        if meta:
            value = meta.get("result")
            if st.state == JobState.SUCCESS.value:
                st.result = value if isinstance(value, dict) else {"value": value}
            elif st.state in (JobState.FAILURE.value, JobState.REVOKED.value, JobState.RETRY.value):
                st.error = _error_text(value) or ("cancelled" if st.state == JobState.REVOKED.value else "failed")
            elif st.state == JobState.PROGRESS.value and isinstance(value, dict):
                st.progress = value
        return st

    def wait(self, job_id: str, on_progress: Callable[[JobStatus], None] | None = None,
             timeout: float | None = None, poll: float = 0.25) -> dict:
        """Block until the job finishes; return its result or raise JobFailed / JobCancelled.

        Survives a broker restart: connection errors are retried until `timeout`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_error = None
        while True:
            try:
                st = self.status(job_id)
                last_error = None
            except redis.exceptions.ConnectionError as exc:  # broker restarting: keep waiting
                st, last_error = None, exc
            if st is not None:
                if on_progress:
                    on_progress(st)
                if st.state == JobState.SUCCESS.value:
                    return st.to_dict()
                if st.state == JobState.FAILURE.value:
                    raise JobFailed(f"job {job_id} failed: {st.error}")
                if st.state == JobState.REVOKED.value:
                    raise JobCancelled(f"job {job_id} was cancelled")
            if deadline is not None and time.monotonic() > deadline:
                if last_error is not None:
                    raise BrokerUnavailable(f"lost the broker at {redact(self.broker_url)}: {last_error}")
                raise DigitqError(f"job {job_id} still {st.state} after {timeout:.0f} s; `digitq wait {job_id}` waits again")
            time.sleep(poll if last_error is None else 1.0)

    def jobs(self, limit: int = 20) -> list[JobStatus]:
        """The most recently submitted jobs, newest first."""
        ids = [i.decode() for i in self.redis.zrevrange(JOBS_INDEX_KEY, 0, limit - 1)]
        out = []
        for job_id in ids:
            try:
                out.append(self.status(job_id))
            except NoSuchJob:
                self.redis.zrem(JOBS_INDEX_KEY, job_id)
        return out

    def workers(self) -> list[dict]:
        """Live workers' announcements: node, host, queues, devices, TensorFlow, current job."""
        out = []
        for key in sorted(self.redis.scan_iter(match=WORKER_KEY_PREFIX + "*", count=200)):
            raw = self.redis.get(key)
            if raw:
                out.append(json.loads(raw))
        return out

    def logs(self, job_id: str, start: int = 0) -> list[str]:
        """A job's log lines from index `start` on."""
        check_job_id(job_id)
        return [line.decode(errors="replace") for line in self.redis.lrange(log_key(job_id), start, -1)]

    def cancel(self, job_id: str) -> JobStatus:
        """Stop a queued or running job for good: the flag in Redis outlives worker restarts."""
        st = self.status(job_id)
        if st.state in FINISHED_STATES:
            return st
        self.redis.set(cancel_key(job_id), 1, ex=self.settings.result_ttl)
        self.app.control.revoke(job_id)
        if st.state == JobState.PENDING.value:
            self.app.backend.mark_as_revoked(job_id, reason="cancelled")
        return self.status(job_id)


def _error_text(value) -> str | None:
    if isinstance(value, dict):
        msg = value.get("exc_message")
        if isinstance(msg, (list, tuple)):
            msg = " ".join(str(m) for m in msg)
        return str(msg) if msg else value.get("exc_type")
    return str(value) if value else None


def connect(settings: Settings | None = None, start_local: bool = True,
            notify: Callable[[str], None] | None = None) -> Client:
    """A Client for DIGITQ_BROKER_URL, else for the embedded stack (started when `start_local`)."""
    settings = settings or load_settings()
    url = settings.broker_url
    if not url:
        from digitq.common.stack import LocalStack, ensure_running

        if start_local:
            url, note = ensure_running(settings)
            if note and notify:
                notify(note)
        else:
            url = LocalStack(settings).broker_url()
            if not url:
                raise BrokerUnavailable("no broker: set DIGITQ_BROKER_URL, or start the embedded stack with `digitq local up`")
    client = Client(url, settings)
    client.ping()
    return client
