"""The client's Python API: `Client` is the one front door. Everything the `digitq` command line
does, a Python user can do with it:

    client = Client()                       # DIGITQ_BROKER_URL, else the embedded stack (started on first use)
    job_id = client.submit_train(TrainRequest(epochs=2))
    result = client.wait(job_id, on_progress=print)
    summary = client.predict("scans/", model="digits", output="predictions.csv")
    scores = client.evaluate(EvaluateRequest(model="digits"))

Job state is read raw from the result backend (JSON), so reading a failure never imports the
worker's exception classes; task results are parsed with the dataclasses of digitq.common.schemas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import redis

from digitq.common import ensemble, registry
from digitq.common.celery_keys import task_meta_key
from digitq.common.errors import (
    BrokerFull, BrokerUnavailable, DigitqError, InvalidRequest, JobCancelled, JobFailed, JobVanished, NoSuchJob, NoSuchModel,
    NoWorker, WorkerNotInstalled,
)
from digitq.common.announcements import announced
from digitq.common.names import (
    EVALUATE_TASK, FINISHED_STATES, JOBS_INDEX_KEY, PREDICT_QUEUE, REPORT_TASK, TRAIN_QUEUE, TRAIN_TASK,
    JobState, cancel_key, job_key, log_key,
)
from digitq.common.schemas import (
    JOB_ID_RE, EvaluateRequest, EvaluateResult, PredictSummary, ReportRequest, ReportResult, TrainRequest,
    check_job_id,
)
from digitq.common.redis_client import OUT_OF_MEMORY_MESSAGE, eviction_warning, is_out_of_memory, make_redis
from digitq.common.redis_client import redact as redact
from digitq.common.settings import Settings, load_settings
from digitq.common.sweep import sweep_key

if TYPE_CHECKING:
    from digitq.client.predict import Row, _Pipeline
    from digitq.client.report import SavedReport

CONNECT_TIMEOUT = 3.0
"""Seconds to wait for the broker before calling it unreachable."""

MAX_JOBS_LISTED = 10_000
"""Most jobs `digitq jobs --limit` lists."""

LOG_POLL = 0.5
"""Seconds between two looks for new log lines while following a job."""

CHECK_EVERY = 2.0
"""Seconds between two looks, while waiting, at whether a worker serves the queue and whether
Redis is still the one the wait started on (a restart or a failover changes its run id)."""


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
    """A connection to one digitq broker (Redis), made on first use.

    Args:
        broker_url: the Redis URL; None: DIGITQ_BROKER_URL, else the embedded stack's.
        settings: DIGITQ_* settings (default: read from the environment).
        start_local: with no broker configured, start the embedded stack when it is first needed.
        notify: called with a one-line note when the embedded stack is started or restarted.
    """

    def __init__(self, broker_url: str | None = None, settings: Settings | None = None, *,
                 start_local: bool = True, notify: Callable[[str], None] | None = None):
        self.settings = settings or load_settings()
        self._broker_url = broker_url
        self._broker_url_given = broker_url is not None
        self._settings_matched = False
        self._check_on_connect = broker_url is None  # a URL found here is pinged once, for a clear error
        self.start_local = start_local
        self.notify = notify
        self._redis = None
        self._app = None

    # --- the connection ----------------------------------------------------------------------
    @property
    def broker_url(self) -> str:
        """The broker's URL; with none configured, the embedded stack's (started if allowed)."""
        if self._broker_url is None:
            self._broker_url = self.settings.broker_url or self._local_broker_url()
        return self._broker_url

    def _local_broker_url(self) -> str:
        from digitq.common.stack import LocalStack, ensure_running

        if self.start_local:
            url, note = ensure_running(self.settings)
            if note and self.notify:
                self.notify(note)
            return url
        url = LocalStack(self.settings).broker_url()
        if not url:
            raise BrokerUnavailable("no broker: set DIGITQ_BROKER_URL, or start the embedded stack with `digitq local up`")
        return url

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = make_redis(self.broker_url, self.settings, socket_connect_timeout=CONNECT_TIMEOUT,
                                     socket_timeout=30, retry_on_timeout=True, health_check_interval=30)
            if self._check_on_connect:
                self._check_on_connect = False
                self.ping()
        return self._redis

    @property
    def app(self):
        """The Celery app that sends tasks by name (Celery is imported here, on first use)."""
        if self._app is None:
            from digitq.common.celery_app import make_celery

            self._app = make_celery(self.settings, self.broker_url)
        return self._app

    def connect(self) -> Client:
        """Reach the broker now rather than at the first call that needs it (starting the embedded
        stack if allowed), and build the Celery app; returns self."""
        self.ping()
        self.app
        warning = eviction_warning(self.redis)
        if warning and self.notify:
            self.notify(f"warning: {warning}")
        return self

    def ping(self) -> None:
        """Reach the broker, or raise BrokerUnavailable with a one-line reason (password hidden)."""
        self._check_on_connect = False
        try:
            self.redis.ping()
        except redis.exceptions.AuthenticationError as exc:
            if _no_password(self.broker_url):
                raise self._needs_password() from None
            raise BrokerUnavailable(f"the broker at {redact(self.broker_url)} refused the password: {exc}") from None
        except redis.exceptions.ResponseError as exc:
            if "auth" in str(exc).lower() or "HELLO" in str(exc):  # an old server's answer to a missing password
                raise self._needs_password() from None
            raise BrokerUnavailable(f"cannot use the broker at {redact(self.broker_url)}: {exc}") from None
        except redis.exceptions.RedisError as exc:
            raise BrokerUnavailable(f"cannot reach the broker at {redact(self.broker_url)}: {exc}") from None

    def _needs_password(self) -> BrokerUnavailable:
        return BrokerUnavailable(f"the broker at {redact(self.broker_url)} needs a password: put it in the URL, "
                                 "redis://:PASSWORD@host:port/db")

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
        with refusing_full():
            pipe.execute()

    def finish_job(self, job_id: str, state: str, result) -> None:
        """Store the final state of a job the client itself ran (a predict batch of many tasks)."""
        if self._redis is None:
            return  # never connected: there is no broker to tell
        try:
            if state == JobState.SUCCESS.value:
                self.app.backend.store_result(job_id, result, state)
            else:
                self.app.backend.mark_as_failure(job_id, DigitqError(str(result)))
        except redis.exceptions.RedisError:
            pass  # only `digitq jobs` would miss it

    def match_local_worker(self) -> None:
        """With the embedded stack, before the first task is queued: a worker started by an
        earlier command with another DIGITQ_DATA_DIR (or CPU replicas, GPUs, mirrors) is
        restarted with this client's settings when idle, or the send is refused with the way
        out (digitq.common.stack.match_settings)."""
        if self._settings_matched or self.settings.broker_url is not None or self._broker_url_given:
            return
        self._settings_matched = True
        if not self.start_local:
            return
        from digitq.common.stack import match_settings

        note = match_settings(self.settings)
        if note and self.notify:
            self.notify(note)

    def send(self, task: str, payload: dict, queue: str, task_id: str | None = None) -> str:
        """Queue the task named `task` with its one JSON argument; returns the task id."""
        self.match_local_worker()
        task_id = task_id or uuid.uuid4().hex
        with refusing_full():
            self.app.send_task(task, args=[payload], task_id=task_id, queue=queue)
        return task_id

    def _submit(self, task: str, queue: str, payload: dict, kind: str, name: str) -> str:
        job_id = uuid.uuid4().hex
        self.record_job(job_id, kind, name, payload)
        return self.send(task, payload, queue, task_id=job_id)

    def call(self, task: str, payload: dict, queue: str, timeout: float = 3600, task_id: str | None = None) -> dict:
        """Run a task to completion (short jobs: evaluate, list, report) and return its raw result."""
        task_id = self.send(task, payload, queue, task_id)
        try:
            return self.wait_result(task_id, timeout, queue=queue)
        finally:
            self.forget_results([task_id])

    def put_blob(self, key: str, data: bytes, ttl: int) -> None:
        """Store bytes beside a task message (a predict chunk's pixels) for `ttl` seconds."""
        with refusing_full():
            self.redis.set(key, data, ex=ttl)

    def delete_blobs(self, keys: list[str]) -> None:
        """Delete what put_blob stored, once the task that read it is done."""
        self.redis.delete(*keys)

    def forget_results(self, task_ids: list[str]) -> None:
        """Delete tasks' results once this client has read them (predict chunks, listings):
        kept for DIGITQ_RESULT_TTL they would fill Redis. Best effort."""
        if task_ids:
            try:
                self.redis.delete(*(task_meta_key(t) for t in task_ids))
            except redis.exceptions.RedisError:
                pass

    # --- is anything still coming? -------------------------------------------------------------
    def serving(self, queue: str) -> bool:
        """True while a live worker announces that it serves `queue` (or Redis cannot tell)."""
        try:
            return any(queue in (w.get("queues") or []) for w in self.workers())
        except redis.exceptions.RedisError:
            return True  # a broker blip: the connection's own retries cover it

    def server_id(self) -> str | None:
        """The run id of the Redis this client talks to: it changes when Redis restarts or a
        Sentinel failover moves the master (None: unreachable now)."""
        try:
            return str(self.redis.info("server").get("run_id"))
        except redis.exceptions.RedisError:
            return None

    def watchdog(self, queue: str | None, what: str) -> "Watchdog":
        """A Watchdog for a wait on `queue` (see Watchdog)."""
        return Watchdog(self, queue, what)

    def wait_result(self, job_id: str, timeout: float = 3600, poll: float = 0.01,
                    on_poll: Callable[[], None] | None = None, queue: str | None = None,
                    on_check: Callable[[Watchdog], None] | None = None, watchdog: Watchdog | None = None) -> dict:
        """The result of a task that is not in the jobs index (a predict chunk, a listing);
        `on_poll` runs between two looks (the predict pipeline sends chunks then). With `queue`,
        NoWorker once no live worker has served it for DIGITQ_NO_WORKER_TIMEOUT seconds;
        `on_check` runs every CHECK_EVERY seconds with the Watchdog (the predict pipeline looks
        for vanished chunks then, and sends again what a Redis failover lost); `watchdog` carries
        what it knows (the Redis run id, since when no worker serves) from one wait to the next."""
        deadline = time.monotonic() + timeout
        delay = poll
        dog = watchdog or self.watchdog(queue, f"task {job_id}")
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
            if dog.due() and dog.check() and on_check:
                on_check(dog)
            if on_poll:
                on_poll()
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)  # a GET on Redis is cheap: poll often

    def submit_train(self, request: TrainRequest, parallel: int = 0) -> str:
        """Queue a training job; returns its job id. An ensemble (`request.ensemble` K > 1) is K
        member jobs spread over the workers, at most `parallel` queued or running at once (0: as
        many as there are live train workers); the id returned follows them all."""
        request.check()
        ensemble.check_parallel(parallel, request.ensemble)
        self.check_dataset(request.dataset)
        if request.ensemble > 1:
            return self._submit_ensemble(request, parallel)
        return self._submit(TRAIN_TASK, TRAIN_QUEUE, request.to_dict(), "train", request.name)

    # --- an ensemble fanned out over the workers (digitq.common.ensemble) ---------------------------
    def _submit_ensemble(self, request: TrainRequest, parallel: int) -> str:
        """Record the ensemble and its K members, then queue the first members (up to the limit);
        the workers queue the rest as members finish, and register the ensemble after the last."""
        parent = uuid.uuid4().hex
        self.record_job(parent, "train", request.name, request.to_dict())
        self.redis.hset(job_key(parent), "ensemble", request.ensemble)
        rec = ensemble.create(self.redis, parent, request, parallel, self.settings.result_ttl)
        now, pipe = time.time(), self.redis.pipeline()
        for k, member in enumerate(rec.members):  # `digitq status MEMBER` works; `digitq jobs` lists the parent
            pipe.hset(job_key(member), mapping={"kind": "train", "name": request.name, "submitted": now,
                                                "parent": parent, "request": json.dumps(
                                                    ensemble.member_request(request, k).to_dict())})
            pipe.expire(job_key(member), self.settings.result_ttl)
        pipe.execute()
        self.match_local_worker()
        for k in ensemble.dispatch(self.redis, parent, ensemble.dispatch_limit(self.redis, parallel)):
            self.send(TRAIN_TASK, ensemble.member_request(request, k).to_dict(), TRAIN_QUEUE,
                      task_id=ensemble.member_id(parent, k))
        return parent

    def check_dataset(self, dataset: str) -> None:
        """Refuse a dataset folder before it is queued, where this client can see what the worker
        will: with the embedded stack (its worker has this client's settings), or when the folder
        is on this machine. With a remote broker and a folder not mounted here, the worker checks."""
        if dataset in ("mnist", "mnist-test"):
            return
        from digitq.common.paths import resolve_within

        embedded = self.settings.broker_url is None
        if not embedded and not Path(dataset).exists():
            return
        folder = resolve_within(dataset, [self.settings.data_dir, self.settings.home], base=self.settings.data_dir)
        if not folder.is_dir():
            raise InvalidRequest(f"dataset {dataset} is not a folder (it needs sub-folders 0..9)")

    # --- read ------------------------------------------------------------------------------
    def _meta(self, job_id: str) -> dict | None:
        raw = self.redis.get(task_meta_key(job_id))
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
        if info.get("ensemble") and st.state not in FINISHED_STATES:  # no task of its own: its members'
            rec = ensemble.EnsembleRecord.load(self.redis, job_id)
            if rec is not None:
                st.state, st.progress = ensemble.parent_progress(self.redis, rec)
        return st

    def wait(self, job_id: str, on_progress: Callable[[JobStatus], None] | None = None,
             timeout: float | None = None, poll: float = 0.25) -> dict:
        """Block until the job finishes; return its result or raise JobFailed / JobCancelled.

        Survives a broker restart: connection errors are retried until `timeout`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_error = None
        dog = None
        while True:
            try:
                st = self.status(job_id)
                last_error = None
            except redis.exceptions.ConnectionError as exc:  # broker restarting: keep waiting
                st, last_error = None, exc
            except NoSuchJob:
                if dog is None:
                    raise
                raise JobVanished(f"job {job_id} is gone from Redis (it restarted empty, or a failover lost it): "
                                  "its model, if trained, is in the job folder; submit it again") from None
            if dog is None and st is not None:
                dog = self.watchdog(TRAIN_QUEUE if st.kind in (None, "train") else PREDICT_QUEUE, f"job {job_id}")
            if st is not None and st.state not in FINISHED_STATES and dog.due():
                dog.check()
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

    def jobs(self, limit: int = 20, kind: str | None = None) -> list[JobStatus]:
        """The `limit` most recently submitted jobs (of `kind` only: train or predict), newest first."""
        if not 1 <= limit <= MAX_JOBS_LISTED:
            raise InvalidRequest(f"--limit must be between 1 and {MAX_JOBS_LISTED}, got {limit}")
        if kind not in (None, "train", "predict"):
            raise InvalidRequest(f"--kind must be train or predict, got {kind!r}")
        out: list[JobStatus] = []
        start, page = 0, limit if kind is None else max(limit, 100)
        while len(out) < limit:
            ids = [i.decode() for i in self.redis.zrevrange(JOBS_INDEX_KEY, start, start + page - 1)]
            if not ids:
                break
            start += page
            for job_id in ids:
                try:
                    st = self.status(job_id)
                except NoSuchJob:
                    self.redis.zrem(JOBS_INDEX_KEY, job_id)
                    continue
                if kind is None or st.kind == kind:
                    out.append(st)
                    if len(out) == limit:
                        break
        return out

    def workers(self) -> list[dict]:
        """Live workers' announcements: node, host, queues, devices, TensorFlow, current job."""
        return announced(self.redis)

    def logs(self, job_id: str, start: int = 0) -> list[str]:
        """A job's log lines from index `start` on."""
        check_job_id(job_id)
        return [line.decode(errors="replace") for line in self.redis.lrange(log_key(job_id), start, -1)]

    def cancel(self, job_id: str) -> JobStatus:
        """Stop a queued or running job for good: the flag in Redis outlives worker restarts.
        Returns the state after the request: REVOKED, or the state of a running job that its
        worker stops within seconds, or the final state of a job that had already ended."""
        st = self.status(job_id)
        if st.state in FINISHED_STATES:
            return st
        self.redis.set(cancel_key(job_id), 1, ex=self.settings.result_ttl)
        if self.redis.hexists(job_key(job_id), "ensemble"):  # its members stop; none is queued any more
            members = ensemble.cancel(self.redis, job_id)
            for member in members:
                self.redis.set(cancel_key(member), 1, ex=self.settings.result_ttl)
                self.app.control.revoke(member)
            self.app.backend.mark_as_revoked(job_id, reason="cancelled")
            return self.status(job_id)
        self.app.control.revoke(job_id)
        if st.state == JobState.PENDING.value:
            self.app.backend.mark_as_revoked(job_id, reason="cancelled")
        return self.status(job_id)

    def follow_logs(self, job_id: str, follow: bool = False, poll: float = LOG_POLL) -> Iterator[str]:
        """A job's log lines; with `follow`, new ones as they come, until the job ends."""
        st = self.status(job_id)  # unknown job: a clear error
        seen = 0
        while True:
            lines = self.logs(job_id, seen)
            yield from lines
            seen += len(lines)
            if not follow or (st.state in FINISHED_STATES and not lines):
                return
            time.sleep(poll)
            st = self.status(job_id)

    # --- predict, evaluate, report ------------------------------------------------------------
    def predict_rows(self, folder: str, model: str = "digits", **options) -> Iterator[Row]:
        """A Row per file of `folder`, in sorted file order, as the chunks' results arrive; the
        options are digitq.client.predict.predict_folder's. With number=True, a
        digitq.client.numbers.NumberRow per file instead."""
        from digitq.client.predict import predict_folder

        if options.get("number"):
            from digitq.client.numbers import compose_numbers

            return compose_numbers(predict_folder(self, folder, model, **options))
        return predict_folder(self, folder, model, **options)

    def predict(self, folder: str, model: str = "digits", output: str = "predictions.csv", fmt: str = "csv", *,
                recursive: bool = False, remote: bool = False, chunk_size: int | None = None, processes: int = 0,
                gallery: str | None = None, prefetch: _Pipeline | None = None,
                on_total: Callable[[int], None] | None = None,
                on_row: Callable[[int], None] | None = None, number: bool = False,
                min_confidence: float | None = None) -> PredictSummary:
        """Classify every image in `folder` and write one row per file to `output` (csv, or json
        lines; "-" for stdout), whole or not at all; with `gallery`, also a contact sheet PNG.
        With `number`, each image holds a number (1 to 10 digits): its row gives the number
        (digitq.client.numbers). Rows are flagged (digitq.common.doubt): `unsure` under
        `min_confidence` (default DEFAULT_MIN_CONFIDENCE).

        The run is a job in `digitq jobs`, its summary the job's result. `processes` preprocess the
        images here (0: one per core, at most 4); `prefetch` is what
        digitq.client.predict.prefetch_folder started before this client connected. `on_total` gets
        the file count, `on_row` the rows written so far, after each row.
        """
        from digitq.client.predict import DEFAULT_CHUNK, RowWriter, check_predict_options

        from digitq.client.numbers import NUMBER_COLUMNS, check_number_options
        from digitq.common.doubt import DEFAULT_MIN_CONFIDENCE

        chunk_size = DEFAULT_CHUNK if chunk_size is None else chunk_size
        min_confidence = DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
        try:
            check_predict_options(output, fmt, gallery, remote, chunk_size, processes)
            check_number_options(number, min_confidence, gallery, remote)
            writer = RowWriter(output, fmt, NUMBER_COLUMNS) if number else RowWriter(output, fmt)
        except BaseException:
            if prefetch is not None:
                prefetch.close()
            raise
        batch_id = prefetch.batch_id if prefetch is not None else uuid.uuid4().hex
        sheet = None
        if gallery is not None:
            from digitq.client.gallery import ContactSheet

            sheet = ContactSheet()
        ok = False
        used: dict = {}
        started = time.monotonic()
        try:
            rows = self.predict_rows(folder, model, recursive=recursive, chunk_size=chunk_size, remote=remote,
                                     on_total=on_total, batch_id=batch_id, processes=processes,
                                     keep_pixels=sheet is not None, prefetch=prefetch, on_model=used.update,
                                     number=number, min_confidence=min_confidence)
            for row in rows:
                writer.write(row)
                if sheet is not None:
                    d = row.as_dict()
                    sheet.add(row.pixels, row.path, d["digit"] if row.probs is not None else None,
                              d["confidence"] if row.probs is not None else None, row.error)
                if on_row is not None:
                    on_row(writer.classified + writer.failed)
            seconds = time.monotonic() - started
            summary = PredictSummary(job_id=batch_id, classified=writer.classified, failed=writer.failed, output=output,
                                     seconds=round(seconds, 3),
                                     images_per_second=round((writer.classified + writer.failed) / seconds, 1),
                                     model=used.get("model"), flagged=writer.flagged)
            if sheet is not None and len(sheet):
                try:
                    summary.gallery = str(sheet.save(Path(gallery).expanduser()))
                except OSError as exc:
                    raise DigitqError(f"cannot write the gallery {gallery}: {exc.strerror}") from None
            writer.close(keep=True)
            ok = True
        finally:
            if not ok:
                writer.close(keep=False)
                self.finish_job(batch_id, JobState.FAILURE.value, "interrupted or failed before all rows were written")
        self.finish_job(batch_id, JobState.SUCCESS.value, summary.to_dict())
        return summary

    def evaluate(self, request: EvaluateRequest) -> EvaluateResult:
        """Accuracy, loss, per-class accuracy and confusion matrix of a registered model (through
        the predict queue)."""
        request.check()
        self.check_dataset(request.dataset)
        self.show_model(request.model)  # unknown model: fail before queueing
        return EvaluateResult.from_dict(self.call(EVALUATE_TASK, request.to_dict(), PREDICT_QUEUE))

    def report(self, request: ReportRequest, output: str | None = None, timeout: float = 600) -> SavedReport:
        """Have a worker draw a training job's report and write its files to `output` (default
        `report-<job id>`) here: no shared volume needed."""
        from digitq.client.report import SavedReport, check_report_output, write_report_files

        request.check()
        check_report_output(output)
        if ":" in request.target:
            _refuse_combined(self.show_model(request.target), "report")  # unknown model: fail before queueing
        elif not self.redis.exists(job_key(request.target)) and not self.redis.exists(sweep_key(request.target)):
            try:
                _refuse_combined(self.show_model(request.target), "report")
            except NoSuchModel:
                if self._meta(request.target) is None:
                    raise NoSuchJob(f"no model or job named {request.target!r} (see `digitq models list` and "
                                    "`digitq jobs`)") from None
        res = ReportResult.from_dict(self.call(REPORT_TASK, request.to_dict(), PREDICT_QUEUE, timeout=timeout))
        folder = Path(output or f"report-{res.job_id}").expanduser()
        paths = write_report_files(res.to_dict(), folder)
        return SavedReport(res.job_id, res.model, str(folder), [p.name for p in paths], res.folder)

    # --- sweeps (digitq.client.sweep) ---------------------------------------------------------------
    def sweep_submit(self, request) -> str:
        """Queue a hyperparameter sweep (a digitq.common.sweep.SweepRequest): its first P trials now,
        each next one when a trial ends; returns the sweep id."""
        from digitq.client import sweep

        return sweep.submit(self, request)

    def sweep_status(self, sweep_id: str):
        """A sweep's state and trials (digitq.client.sweep.SweepStatus)."""
        from digitq.client import sweep

        return sweep.status(self, sweep_id)

    def sweep_wait(self, sweep_id: str, on_update=None, timeout: float | None = None):
        """Block until the sweep is complete, failed or cancelled; returns its SweepStatus."""
        from digitq.client import sweep

        return sweep.wait(self, sweep_id, on_update, timeout)

    def sweep_cancel(self, sweep_id: str):
        """Stop a sweep: queued trials never run, running ones stop within seconds."""
        from digitq.client import sweep

        return sweep.cancel(self, sweep_id)

    # --- the model registry -----------------------------------------------------------------------
    def list_models(self) -> list[dict]:
        """Every registered model version's record, newest first per name."""
        return registry.list_models(self.redis)

    def show_model(self, ref: str) -> dict:
        """The record of NAME[:VERSION]: the given version, else the promoted one, else the
        best-scoring (digitq.common.registry.default_version)."""
        return registry.resolve_model(self.redis, ref)

    def promote_model(self, ref: str) -> dict:
        """Make NAME (without a version) resolve to NAME:VERSION; returns its record."""
        return registry.promote_model(self.redis, ref)

    def delete_model(self, ref: str) -> dict:
        """Remove NAME:VERSION from the registry (its files stay in its job folder); returns its record."""
        return registry.delete_model(self.redis, ref)

    def combine_models(self, refs: list[str], name: str = "ensemble", evaluate: bool = True) -> dict:
        """Register the average of several models as the next version of `name`; with `evaluate`,
        score it on the MNIST test set and store the scores in its record. Returns the record."""
        rec = registry.combine_models(self.redis, name, refs)
        if evaluate:
            ref = f"{rec['name']}:{rec['version']}"
            res = self.evaluate(EvaluateRequest(model=ref))
            rec = registry.record_scores(self.redis, ref, res.accuracy, res.loss)
        return rec

    def export_model(self, ref: str, directory: str) -> tuple[dict, Path]:
        """Write NAME[:VERSION] as a TensorFlow SavedModel in `directory` (which must not exist);
        returns the model's record and the folder written.

        Runs here, in a subprocess (`python -m digitq.worker.export`), so this process never
        imports TensorFlow: needs digitq[worker] and the shared volume mounted at DIGITQ_HOME.
        """
        import importlib.util

        if Path(directory).expanduser().exists():
            raise DigitqError(f"{directory} already exists; export writes a new folder")
        rec = self.show_model(ref)
        if importlib.util.find_spec("tensorflow") is None:
            raise WorkerNotInstalled("export needs TensorFlow here: pip install 'digitq[worker]'")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        proc = subprocess.run([sys.executable, "-m", "digitq.worker.export", directory], input=json.dumps(rec),
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            errors = [line[len("error: "):] for line in proc.stderr.splitlines() if line.startswith("error: ")]
            last = errors[-1] if errors else (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DigitqError(f"export failed: {last}" if not errors else last)
        return rec, Path(proc.stdout.strip().splitlines()[-1])

    # --- the shared volume and the embedded stack -------------------------------------------------
    def tensorboard_logdir(self, target: str | None = None) -> Path:
        """The TensorBoard log folder of a job id or NAME[:VERSION] (its training job), or of all jobs."""
        jobs_dir = self.settings.jobs_dir
        if not target:
            return jobs_dir
        if ":" not in target and JOB_ID_RE.match(target) and (jobs_dir / target).is_dir():
            logdir = jobs_dir / target / "tensorboard"
        else:
            rec = self.show_model(target)
            _refuse_combined(rec, "training logs")
            logdir = jobs_dir / rec["job_id"] / "tensorboard"
        if not logdir.parent.is_dir():
            raise DigitqError(f"no job folder at {logdir.parent} (is the shared volume mounted here as DIGITQ_HOME?)")
        return logdir

    def local_up(self) -> dict:
        """Start the embedded redis-server and worker (if not running); returns local_status()."""
        from digitq.common.stack import LocalStack

        return LocalStack(self.settings).up()

    def local_down(self) -> dict:
        """Stop the embedded worker and redis-server; returns local_status()."""
        from digitq.common.stack import LocalStack

        return LocalStack(self.settings).down()

    def local_status(self) -> dict:
        """The embedded stack: home, and whether redis and the worker run (pid, address, log)."""
        from digitq.common.stack import LocalStack

        return LocalStack(self.settings).status()


@contextmanager
def refusing_full():
    """Redis' out-of-memory refusal (maxmemory, noeviction) as BrokerFull with one line that
    says so, rather than as a broker that cannot be reached."""
    try:
        yield
    except Exception as exc:
        if is_out_of_memory(exc):
            raise BrokerFull(OUT_OF_MEMORY_MESSAGE) from None
        raise


class Watchdog:
    """Says, in one line and within a bounded time, why a wait would never end: no live worker
    serves its queue (NoWorker after DIGITQ_NO_WORKER_TIMEOUT seconds), or Redis came back
    empty. `changed` is True after a check that found another Redis than the last one (a
    restart or a Sentinel failover: the caller may send again what it has in flight)."""

    def __init__(self, client: Client, queue: str | None, what: str):
        self.client, self.queue, self.what = client, queue, what
        self.bound = client.settings.no_worker_timeout
        self.next_check = time.monotonic() + CHECK_EVERY
        self.unserved_since: float | None = None
        self.server = client.server_id()
        self.changed = False

    def due(self) -> bool:
        return time.monotonic() >= self.next_check

    def check(self) -> bool:
        """Look now; raise NoWorker when the bound is passed. Returns True (checked)."""
        now = time.monotonic()
        self.next_check = now + CHECK_EVERY
        server = self.client.server_id()
        self.changed = server is not None and self.server is not None and server != self.server
        if server is not None:
            self.server = server
        if self.queue is None:
            return True
        if self.client.serving(self.queue):
            self.unserved_since = None
        elif self.unserved_since is None:
            self.unserved_since = now
        elif now - self.unserved_since > self.bound:
            raise NoWorker(f"no live worker serves the {self.queue} queue (none for {self.bound} s, "
                           f"DIGITQ_NO_WORKER_TIMEOUT), so {self.what} cannot finish; start a worker "
                           "(`digitq workers` lists the live ones)")
        return True


def _refuse_combined(rec: dict, what: str) -> None:
    """A combined model (`models combine`) has no training job: say so, and name its members."""
    if rec.get("kind") == "ensemble" and str(rec.get("job_id", "")).startswith("combine-"):
        members = ", ".join(rec.get("combined_from") or [])
        raise InvalidRequest(f"{rec['name']}:{rec['version']} is a combined model (of {members}): it has no {what} "
                             f"of its own; ask for one of its members")


def _no_password(url: str) -> bool:
    """True when a Redis URL carries no password (`redis://host`, `redis://user@host`)."""
    from urllib.parse import urlsplit

    try:
        return not urlsplit(url).password
    except ValueError:
        return True


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
    client = Client(None, settings, start_local=start_local, notify=notify)
    client.ping()
    return client
