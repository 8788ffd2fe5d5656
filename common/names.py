"""Names that cross process boundaries: Celery task names, queues, job states, Redis keys.

The client submits by task name (`send_task`), so any Celery client can submit a job
without importing digitq's worker.
"""

from enum import Enum

TRAIN_TASK = "digitq.train"
PREDICT_TASK = "digitq.predict"  # one chunk of images -> probabilities
LIST_TASK = "digitq.list_images"  # a folder on the shared volume -> its files (for --remote)
EVALUATE_TASK = "digitq.evaluate"  # a registered model on MNIST test or a labelled folder
REPORT_TASK = "digitq.report"  # a training job -> its plots and summary.md (base64), drawn on a worker

TRAIN_QUEUE = "train"
PREDICT_QUEUE = "predict"
ALL_QUEUES = (TRAIN_QUEUE, PREDICT_QUEUE)

KEY_PREFIX = "digitq:"
JOBS_INDEX_KEY = KEY_PREFIX + "jobs"  # sorted set: job id -> submitted time (unix seconds)


def job_key(job_id: str) -> str:
    """Hash with a job's kind, request (JSON) and submit time."""
    return f"{KEY_PREFIX}job:{job_id}"


def cancel_key(job_id: str) -> str:
    """Set when `digitq cancel` asks a job to stop; read by the worker before and during a job."""
    return f"{KEY_PREFIX}cancel:{job_id}"


def log_key(job_id: str) -> str:
    """List of a job's log lines, appended by the worker that runs it (`digitq logs`)."""
    return f"{KEY_PREFIX}log:{job_id}"


WORKER_KEY_PREFIX = KEY_PREFIX + "worker:"


def worker_key(node: str) -> str:
    """A live worker's announcement (JSON, expires unless refreshed): `digitq workers`."""
    return WORKER_KEY_PREFIX + node


PIXELS_KEY_PREFIX = KEY_PREFIX + "pixels:"


def pixels_key(task_id: str) -> str:
    """One predict chunk's raw pixels (count x 784 bytes), stored by the client beside the task
    message (which names the key) and deleted by the client once it has the chunk's result."""
    return PIXELS_KEY_PREFIX + task_id


def lease_key(job_id: str) -> str:
    """Held (with a TTL renewed by a heartbeat) by the one worker running a job."""
    return f"{KEY_PREFIX}lease:{job_id}"


def fence_key(job_id: str) -> str:
    """A job's fencing token: a counter incremented each time a worker takes the job's lease;
    a worker writes the job's outcome only while the counter still holds its own token."""
    return f"{KEY_PREFIX}fence:{job_id}"


RUNNING_KEY = KEY_PREFIX + "running"
"""Hash: job id -> JSON {task, queue, payload, owner} of each training job a worker has taken
and not finished. While the job's lease lives its worker is alive; once the lease is gone with
the record still there, an idle worker re-publishes the job (digitq.worker.watchdog)."""


def takeover_key(job_id: str) -> str:
    """Set (NX, with a TTL) by the one worker that re-publishes a job whose worker died."""
    return f"{KEY_PREFIX}takeover:{job_id}"


class JobState(str, Enum):
    """A job's state; the values are Celery's state strings plus our PROGRESS."""

    PENDING = "PENDING"  # queued, or unknown to the result backend
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"  # cancelled
    RETRY = "RETRY"



FINISHED_STATES = frozenset({JobState.SUCCESS.value, JobState.FAILURE.value, JobState.REVOKED.value})
"""States a job never leaves (Celery also reports RECEIVED, RETRY and others while it lives)."""
