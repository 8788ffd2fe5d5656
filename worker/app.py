"""The worker's Celery app, built when `digitq-worker` starts (digitq.worker.__main__), never at import.

    ctx = WorkerContext.connect(load_settings(), queues=["train", "predict"])
    app = make_worker_app(ctx)       # digitq's tasks registered, presence and job logs hooked in

`WorkerContext` is what the tasks of one worker process share: the settings, the Redis client,
the owner string of the leases it takes, and what it announces (queues, devices).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from celery import Celery, signals
from kombu.asynchronous import get_event_loop

from digitq.common.celery_app import make_celery
from digitq.common.errors import DigitqError
from digitq.common.settings import Settings
from digitq.worker import prometheus, shutdown
from digitq.worker.compat import QuietRequeues
from digitq.worker.presence import JobLogHandler, Presence
from digitq.worker.tasks import register_tasks

log = logging.getLogger("digitq.worker")

EX_CONFIG = 78
"""Exit status of a worker that refuses to start for its configuration (sysexits.h EX_CONFIG)."""


def worker_broker_url(settings: Settings) -> str:
    """DIGITQ_BROKER_URL, else the embedded stack's Redis if it runs."""
    if settings.broker_url:
        return settings.broker_url
    from digitq.common.stack import LocalStack

    url = LocalStack(settings).broker_url()
    if not url:
        raise DigitqError("set DIGITQ_BROKER_URL (redis://...) or start the embedded stack with `digitq local up`")
    return url


@dataclass
class WorkerContext:
    """One worker process's shared state (see the module docstring)."""

    settings: Settings
    broker_url: str
    redis: object  # redis.Redis on broker_url
    worker_id: str  # owner string of the leases this process takes: "<host>:<pid>"
    queues: list[str] = field(default_factory=list)  # what it serves and announces
    devices: dict = field(default_factory=dict)  # devices.configure_devices' description, announced
    presence: Presence | None = None  # set while the worker runs
    watchdog: object | None = None  # digitq.worker.watchdog.Watchdog, set while the worker runs
    job_log: JobLogHandler | None = None  # set while a job runs

    @classmethod
    def connect(cls, settings: Settings, queues: Iterable[str] = (), devices: dict | None = None) -> "WorkerContext":
        """A context on DIGITQ_BROKER_URL, else the embedded stack's Redis. Connects lazily:
        no command reaches Redis before the first task or announcement."""
        from digitq.common.redis_client import make_redis, patient_retry

        url = worker_broker_url(settings)
        return cls(settings, url, make_redis(url, settings, health_check_interval=30, retry=patient_retry()),
                   f"{socket.gethostname()}:{os.getpid()}", list(queues), dict(devices or {}))


def make_worker_app(ctx: WorkerContext) -> Celery:
    """digitq's Celery app on `ctx.broker_url` with its tasks registered, and the hooks that
    announce the worker, collect each job's log lines and count jobs for Prometheus."""
    app = make_celery(ctx.settings, ctx.broker_url)
    # --- Redis under pressure (issue 16): final states wait for room, delivered messages are held
    from digitq.worker.compat import hold_messages_while_full
    from digitq.worker.result_store import backend_class_path

    backend_url = ctx.settings.result_backend or ctx.broker_url
    app.backend_cls = f"{backend_class_path(backend_url)}+{backend_url}"
    hold_messages_while_full()
    # ---
    register_tasks(app, ctx)
    QuietRequeues().install()
    _connect_signals(app, ctx)
    return app


def start_watchdog(ctx: WorkerContext, app: Celery) -> None:
    """The takeover sweep (digitq.worker.watchdog), publishing through an app of its own (its
    own connections, used from the sweep's thread); `app` stays the process' current app."""
    from digitq.worker.watchdog import Watchdog

    publisher = make_celery(ctx.settings, ctx.broker_url)
    app.set_current()
    ctx.watchdog = Watchdog(ctx.redis, publisher, ctx.worker_id, ctx.settings.visibility_timeout).start()


def check_redis_and_volume(ctx: WorkerContext, node: str) -> str:
    """At start-up (issue 16): warn when Redis may evict keys, and stop this worker with one line
    when its DIGITQ_HOME is not the shared volume the live workers use. Returns the volume id."""
    import sys

    from digitq.common.redis_client import eviction_warning
    from digitq.worker.presence import check_shared_volume, volume_id

    warning = eviction_warning(ctx.redis)
    if warning:
        log.warning(warning)
    try:
        volume = volume_id(ctx.settings.home)
        check_shared_volume(ctx.redis, node, volume, ctx.settings.home)
    except DigitqError as exc:
        # Before any job: stop the whole process here. Celery turns an exception from a
        # worker_ready hook into a clean exit 0, which a supervisor would not notice.
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(EX_CONFIG)
    return volume


def _connect_signals(app: Celery, ctx: WorkerContext) -> None:
    """Celery's signals are process-wide: each hook acts only for senders of `app`."""

    def ours(sender) -> bool:
        return getattr(sender, "app", None) is app

    def announce(sender=None, **_):
        if not ours(sender):
            return
        volume = check_redis_and_volume(ctx, sender.hostname)
        ctx.presence = Presence(ctx.redis, sender.hostname, ctx.queues, ctx.devices, volume)
        ctx.presence.start()
        start_watchdog(ctx, app)
        if ctx.settings.metrics_port:
            prometheus.start_metrics_server(ctx.settings.metrics_port, ctx.redis, ctx.queues)

    def withdraw(sender=None, **_):
        if ours(sender) and ctx.presence is not None:
            ctx.presence.stop()
        if ours(sender) and ctx.watchdog is not None:
            ctx.watchdog.stop()

    def job_started(sender=None, task_id=None, task=None, **_):
        if not ours(task):
            return
        ctx.job_log = JobLogHandler(ctx.redis, task_id, ctx.settings.result_ttl)
        logging.getLogger("digitq").addHandler(ctx.job_log)
        if ctx.presence is not None:
            ctx.presence.job_started(task_id, task.name)

    def job_finished(sender=None, task_id=None, task=None, state=None, **_):
        if not ours(task):
            return
        handler, ctx.job_log = ctx.job_log, None
        if handler is not None:
            logging.getLogger("digitq").removeHandler(handler)
        if ctx.presence is not None:
            ctx.presence.job_finished()
        prometheus.job_ended(task.name, state or "UNKNOWN")
        trainer = sys.modules.get("digitq.worker.train")  # loaded once a training job ran here
        if trainer is not None and trainer.memory_waiting():
            # After the result is stored (the client need not wait) and after the message's ack,
            # which Celery queues on the worker's event loop (call_soon) once this hook returns:
            # the loop runs what is queued before it fires its timers.
            hub = get_event_loop()
            if hub is not None:
                hub.call_later(0, trainer.release_memory)
            else:
                trainer.release_memory()

    # SIGTERM / Ctrl-C: Celery's handler sends this from the signal handler (sender: the node
    # name, not the app); a running training job hands itself back at its next batch.
    signals.worker_shutting_down.connect(shutdown.request, weak=False)
    # weak=False: the hooks are closures that nothing else holds.
    signals.worker_ready.connect(announce, weak=False)
    signals.worker_shutdown.connect(withdraw, weak=False)
    signals.task_prerun.connect(job_started, weak=False)
    signals.task_postrun.connect(job_finished, weak=False)
