"""The Celery tasks: thin wrappers that turn a JSON message into a call of a job module
(digitq.worker.train_job, predict, report), registered on the worker's app when it starts.

Errors a person should read (bad parameters, missing data) fail the job at once with their
one-line message; anything unexpected is logged with its traceback and reported as one line,
so the client never has to import the worker's exception classes (or TensorFlow) to read it.

Importing this module builds nothing: `register_tasks(app, ctx)` (called by
digitq.worker.app.make_worker_app) binds the tasks to one app and one WorkerContext.
"""

from __future__ import annotations

import errno
import json
import logging
from typing import TYPE_CHECKING

from celery.exceptions import Ignore, Reject

from digitq.common.errors import DigitqError, InvalidRequest, JobCancelled, JobHandedBack, LeaseLost
from digitq.common.names import EVALUATE_TASK, LIST_TASK, PREDICT_TASK, REPORT_TASK, TRAIN_QUEUE, TRAIN_TASK
from digitq.common.redis_client import is_out_of_memory
from digitq.worker import ensemble, train_job
from digitq.worker.compat import TaskResultSummaries, delivery_tag_of

if TYPE_CHECKING:
    from celery import Celery

    from digitq.worker.app import WorkerContext

log = logging.getLogger("digitq.worker")


class JobError(DigitqError):
    """An unexpected failure inside a job, reduced to one line for the client."""


EXPECTED = (DigitqError,)
"""Failures a person should read, not bugs: Celery stores them as the job's FAILURE but logs them
in worker.log as one line without a traceback (`throws=`). An unexpected error's traceback is
still logged by `_run` before it becomes a one-line JobError."""


def message_payload(args: tuple, kwargs: dict, limit: int) -> dict:
    """The one JSON object a job message must carry, within the size limit (bytes)."""
    if kwargs or len(args) != 1:
        raise InvalidRequest("a digitq job message carries exactly one JSON object as its only argument")
    size = len(json.dumps(args[0]))
    if size > limit:
        raise InvalidRequest(f"job message too large: {size} bytes (limit {limit}, DIGITQ_MAX_MESSAGE_BYTES)")
    return args[0]


def _run(task, fn, args: tuple, kwargs: dict, limit: int):
    """Call fn(payload); map cancellation to REVOKED and unexpected errors to a one-line JobError."""
    job_id = task.request.id
    try:
        return fn(message_payload(args, kwargs, limit))
    except JobCancelled:
        log.info("job %s cancelled", job_id)
        task.backend.mark_as_revoked(job_id, reason="cancelled", request=task.request)
        raise Ignore()
    except JobHandedBack:  # the worker is stopping: the message goes back to the head of its queue now
        log.info("job %s handed back to the queue", job_id)
        raise Reject("worker stopping: job handed back", requeue=True) from None
    except train_job.JobAlreadyRunning as exc:  # a duplicate delivery: ack it, leave the state alone
        log.warning("%s; dropping this duplicate delivery", exc)  # (the holder's running record keeps the job)
        raise Ignore()
    except LeaseLost as exc:  # paused or cut off past the lease: another worker has the job now
        log.warning("job %s: %s; this worker dropped the job, wrote nothing, and takes the next one", job_id, exc)
        raise Ignore()
    except Exception as exc:
        if is_out_of_memory(exc):  # Redis full (issue 16): not the job's fault; it runs again once there is room
            from digitq.worker.result_store import wait_until_writable

            wait_until_writable(task.backend.client, f"job {job_id}")
            return _run(task, fn, args, kwargs, limit)
        if isinstance(exc, DigitqError):
            raise
        log.exception("job %s failed", job_id)  # the message is what the user sees; the traceback goes to the log
        raise JobError(one_line(exc)) from None


def one_line(exc: Exception) -> str:
    """An unexpected error as one line for the client. A full disk says so in words: h5py's
    own text for ENOSPC ("Can't synchronously write data") does not."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and "No space left on device" not in text:
        text = f"No space left on device (the shared volume is full): {text}"
    return text


def chunk_summary(result: dict) -> str:
    """A predict chunk's result in one short line for worker.log: counts, not probabilities."""
    rows = result.get("errors") or []  # one per image, whether the probabilities come packed or as lists
    errors = sum(1 for e in rows if e)
    return f"{len(rows)} image(s), {errors} error(s), model {result.get('model')}"


def register_tasks(app: Celery, ctx: WorkerContext) -> dict:
    """Register digitq's tasks on `app`, each running with `ctx`'s settings and Redis client.

    Returns the tasks by name. `shared=False`: they belong to this app only, never to an app
    built later in the same process."""
    settings, r = ctx.settings, ctx.redis
    limit = settings.max_message_bytes
    summaries = TaskResultSummaries().install()
    from digitq.worker.sweep import SweepHooks  # a sweep's trials queue the next one (digitq.worker.sweep)

    sweep_hooks = SweepHooks(ctx.broker_url, lambda job_id, payload: app.send_task(
        TRAIN_TASK, args=[payload], task_id=job_id, queue=TRAIN_QUEUE), settings.result_ttl)

    @app.task(bind=True, name=TRAIN_TASK, shared=False, lazy=False, throws=EXPECTED)
    def train_task(self, *args, **kwargs):
        """Train a model (see digitq.worker.train_job and digitq.worker.train)."""

        def report(meta):
            try:
                self.update_state(state="PROGRESS", meta=meta)
            except Exception as exc:  # a broker blip must not kill the training; the next report retries
                log.warning("progress report failed: %s", str(exc).splitlines()[0][:200])

        tag = delivery_tag_of(self.request.id)

        def train(request, register=True):
            return train_job.run_train_job(self.request.id, request, settings, r, report, owner=ctx.worker_id,
                                           delivery_tag=tag, register=register, sweep_hooks=sweep_hooks)

        # An ensemble's member (digitq.worker.ensemble): trained like any job, then counted, the next
        # members queued, and the ensemble registered after the last; any other job: train(request).
        return _run(self, lambda request: ensemble.run_train_message(
            self.request.id, lambda register: train(request, register), settings, r, self.app, ctx.worker_id),
            args, kwargs, limit)

    @app.task(bind=True, name=PREDICT_TASK, shared=False, lazy=False, throws=EXPECTED)
    def predict_task(self, *args, **kwargs):
        """Classify one chunk of images (see digitq.worker.predict)."""
        from digitq.worker.predict import run_predict_chunk

        result = _run(self, lambda request: run_predict_chunk(request, settings, r), args, kwargs, limit)
        summaries.summaries[self.request.id] = chunk_summary(result)
        return result

    @app.task(bind=True, name=LIST_TASK, shared=False, lazy=False, throws=EXPECTED)
    def list_images_task(self, *args, **kwargs):
        """List a folder on the shared volume for `digitq predict --remote`."""
        from digitq.worker.predict import run_list_images

        result = _run(self, lambda request: run_list_images(request, settings), args, kwargs, limit)
        summaries.summaries[self.request.id] = f"{len(result.get('files') or [])} file(s) in {result.get('folder')}"
        return result

    @app.task(bind=True, name=EVALUATE_TASK, shared=False, lazy=False, throws=EXPECTED)
    def evaluate_task(self, *args, **kwargs):
        """Score a registered model on MNIST's test set or a labelled folder."""
        from digitq.worker.predict import run_evaluate

        return _run(self, lambda request: run_evaluate(request, settings, r), args, kwargs, limit)

    @app.task(bind=True, name=REPORT_TASK, shared=False, lazy=False, throws=EXPECTED)
    def report_task(self, *args, **kwargs):
        """Draw a training job's report (PNG plots, summary.md) into its folder and return the files."""
        from digitq.worker.report import run_report

        result = _run(self, lambda request: run_report(request, settings, r), args, kwargs, limit)
        summaries.summaries[self.request.id] = f"report of {result.get('job_id')}: {', '.join(result.get('files') or {})}"
        return result

    return {t.name: t for t in (train_task, predict_task, list_images_task, evaluate_task, report_task)}
