"""The Celery tasks: thin wrappers that turn a JSON message into a call of the job modules (digitq.worker.train_job, predict, report).

Errors a person should read (bad parameters, missing data) fail the job at once with their
one-line message; anything unexpected is logged with its traceback and reported as one line,
so the client never has to import the worker's exception classes (or TensorFlow) to read it.
"""

from __future__ import annotations

import json
import logging
import os
import socket

import redis
from celery import signals
from celery.exceptions import Ignore

from digitq.common.celery_app import make_celery
from digitq.common.errors import DigitqError, InvalidRequest, JobCancelled
from digitq.common.names import EVALUATE_TASK, LIST_TASK, PREDICT_TASK, REPORT_TASK, TRAIN_TASK
from digitq.common.settings import load_settings
from digitq.worker import prometheus, train_job
from digitq.worker.presence import JobLogHandler, Presence

log = logging.getLogger("digitq.worker")


class JobError(DigitqError):
    """An unexpected failure inside a job, reduced to one line for the client."""


def worker_broker_url(settings) -> str:
    """DIGITQ_BROKER_URL, else the embedded stack's Redis if it runs."""
    if settings.broker_url:
        return settings.broker_url
    from digitq.common.stack import LocalStack

    url = LocalStack(settings).broker_url()
    if not url:
        raise DigitqError("set DIGITQ_BROKER_URL (redis://...) or start the embedded stack with `digitq local up`")
    return url


settings = load_settings()
broker_url = worker_broker_url(settings)
app = make_celery(settings, broker_url)
redis_client = redis.Redis.from_url(broker_url, health_check_interval=30)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
"""Owner string of the leases this process takes."""

WORKER_CONFIG: dict = {"queues": [], "devices": {}}
"""Set by digitq.worker.__main__ before the worker starts: what it announces."""

_presence: dict = {}


@signals.worker_ready.connect
def _announce(sender=None, **_):
    p = Presence(redis_client, sender.hostname, WORKER_CONFIG["queues"], WORKER_CONFIG["devices"])
    p.start()
    _presence["p"] = p
    if settings.metrics_port:
        prometheus.start_metrics_server(settings.metrics_port, redis_client, WORKER_CONFIG["queues"])


@signals.worker_shutdown.connect
def _withdraw(**_):
    if "p" in _presence:
        _presence["p"].stop()


@signals.task_prerun.connect
def _job_started(task_id=None, task=None, **_):
    handler = JobLogHandler(redis_client, task_id, settings.result_ttl)
    logging.getLogger("digitq").addHandler(handler)
    _presence["handler"] = handler
    if "p" in _presence:
        _presence["p"].job_started(task_id, task.name)


@signals.task_postrun.connect
def _job_finished(task_id=None, task=None, state=None, **_):
    handler = _presence.pop("handler", None)
    if handler is not None:
        logging.getLogger("digitq").removeHandler(handler)
    if "p" in _presence:
        _presence["p"].job_finished()
    prometheus.job_ended(task.name, state or "UNKNOWN")


def message_payload(args: tuple, kwargs: dict, limit: int) -> dict:
    """The one JSON object a job message must carry, within the size limit (bytes)."""
    if kwargs or len(args) != 1:
        raise InvalidRequest("a digitq job message carries exactly one JSON object as its only argument")
    size = len(json.dumps(args[0]))
    if size > limit:
        raise InvalidRequest(f"job message too large: {size} bytes (limit {limit}, DIGITQ_MAX_MESSAGE_BYTES)")
    return args[0]


def delivery_tag_of(task_id: str) -> str | None:
    """The broker's delivery tag of the message this worker runs as `task_id` (what the lease
    refreshes in kombu's unacked index). Celery's task context does not carry it: its
    `delivery_info` holds exchange, routing key, priority and redelivered only; the worker's
    request objects do."""
    from celery.worker import state

    for req in [*state.active_requests, *state.reserved_requests]:
        if req.id == task_id:
            return getattr(req.message, "delivery_tag", None)
    log.warning("no delivery tag for job %s: a run longer than the visibility timeout will be redelivered", task_id)
    return None


def _run(task, fn, args: tuple, kwargs: dict):
    """Call fn(payload); map cancellation to REVOKED and unexpected errors to a one-line JobError."""
    job_id = task.request.id
    try:
        return fn(message_payload(args, kwargs, settings.max_message_bytes))
    except JobCancelled:
        log.info("job %s cancelled", job_id)
        task.backend.mark_as_revoked(job_id, reason="cancelled", request=task.request)
        raise Ignore()
    except train_job.JobAlreadyRunning as exc:  # a duplicate delivery: ack it, leave the state alone
        log.warning("%s; dropping this duplicate delivery", exc)
        raise Ignore()
    except DigitqError:
        raise
    except Exception as exc:  # the message is what the user sees; the traceback goes to the log
        log.exception("job %s failed", job_id)
        raise JobError(f"{type(exc).__name__}: {exc}".splitlines()[0][:500]) from None


@app.task(bind=True, name=TRAIN_TASK)
def train_task(self, *args, **kwargs):
    """Train a model (see digitq.worker.train)."""

    def report(meta):
        try:
            self.update_state(state="PROGRESS", meta=meta)
        except Exception as exc:  # a broker blip must not kill the training; the next report retries
            log.warning("progress report failed: %s", exc)

    tag = delivery_tag_of(self.request.id)
    return _run(self, lambda request: train_job.run_train_job(self.request.id, request, settings, redis_client, report,
                                                         owner=WORKER_ID, delivery_tag=tag), args, kwargs)


@app.task(bind=True, name=PREDICT_TASK)
def predict_task(self, *args, **kwargs):
    """Classify one chunk of images (see digitq.worker.predict)."""
    from digitq.worker.predict import run_predict_chunk

    return _run(self, lambda request: run_predict_chunk(request, settings, redis_client), args, kwargs)


@app.task(bind=True, name=LIST_TASK)
def list_images_task(self, *args, **kwargs):
    """List a folder on the shared volume for `digitq predict --remote`."""
    from digitq.worker.predict import run_list_images

    return _run(self, lambda request: run_list_images(request, settings), args, kwargs)


@app.task(bind=True, name=EVALUATE_TASK)
def evaluate_task(self, *args, **kwargs):
    """Score a registered model on MNIST's test set or a labelled folder."""
    from digitq.worker.predict import run_evaluate

    return _run(self, lambda request: run_evaluate(request, settings, redis_client), args, kwargs)


@app.task(bind=True, name=REPORT_TASK)
def report_task(self, *args, **kwargs):
    """Draw a training job's report (PNG plots, summary.md) into its folder and return the files."""
    from digitq.worker.report import run_report

    return _run(self, lambda request: run_report(request, settings, redis_client), args, kwargs)
