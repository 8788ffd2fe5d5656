"""The Celery app both sides use: JSON only, late acks, one job at a time per worker process.

`make_celery` is a factory: importing this module builds nothing. The client's app has no tasks
(it submits by name, so it never imports the worker's tasks nor TensorFlow); the worker registers
its tasks on its own app when it starts (digitq.worker.app.make_worker_app).
"""

from __future__ import annotations

from celery import Celery

from digitq.common.names import REPORT_TASK, EVALUATE_TASK, LIST_TASK, PREDICT_QUEUE, PREDICT_TASK, TRAIN_QUEUE, TRAIN_TASK
from digitq.common.redis_client import is_sentinel_url, sentinel_transport_options
from digitq.common.settings import Settings


def make_celery(settings: Settings, broker_url: str, include: tuple[str, ...] = ()) -> Celery:
    """A Celery app on `broker_url` (Redis), configured for long, GPU-bound jobs."""
    backend = settings.result_backend or broker_url
    app = Celery("digitq", broker=broker_url, backend=backend, include=list(include))
    # A job's heartbeat refreshes its message in kombu's unacked index (worker/lease.py);
    # idle workers sweep every 5 s for messages whose worker stopped beating.
    transport = {"visibility_timeout": settings.visibility_timeout, "unacked_restore_interval": 5,
                 "unacked_restore_throttle": 1}
    # A Sentinel URL (sentinel://h1:26379;sentinel://h2:26379) also needs the master's name and
    # the sentinels' own password: kombu's and Celery's transport options.
    broker_transport = dict(transport, **(sentinel_transport_options(settings) if is_sentinel_url(broker_url) else {}))
    backend_transport = dict(transport, **(sentinel_transport_options(settings) if is_sentinel_url(backend) else {}))
    app.conf.update(
        # Only JSON crosses the queue: a pickled message is refused, never executed.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # At-least-once: ack after the job ends, redeliver if the worker dies; one job per process.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        broker_transport_options=broker_transport,
        result_backend_transport_options=backend_transport,
        result_expires=settings.result_ttl,
        task_routes={TRAIN_TASK: {"queue": TRAIN_QUEUE}, PREDICT_TASK: {"queue": PREDICT_QUEUE},
                     LIST_TASK: {"queue": PREDICT_QUEUE}, EVALUATE_TASK: {"queue": PREDICT_QUEUE},
                     REPORT_TASK: {"queue": PREDICT_QUEUE}},
        task_default_queue=TRAIN_QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_pool_limit=4,
        # Transient broker errors: publishing and result writes retry with backoff (a Redis
        # restart takes seconds); permanent errors fail the job at once and are never retried.
        task_publish_retry_policy={"max_retries": 10, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 3},
        result_backend_always_retry=True,
        result_backend_max_retries=30,
        result_backend_max_sleep_between_retries_ms=3000,
    )
    return app
