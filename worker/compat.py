"""The private parts of Celery, kombu, Keras and TensorFlow that the worker relies on, in one place.

Each function wraps one use of an API its library does not document, so that an upgrade that
changes it breaks here, and tests/unit/test_adapters.py says which one and how:

- kombu's Redis transport keeps un-acked messages in a sorted set (`unacked_index`, score =
  delivery time) and redelivers one `visibility_timeout` seconds after its score; the job lease
  refreshes that score while a long job runs (`refresh_unacked`).
- Celery's task context does not carry a message's delivery tag; the worker's request objects
  in `celery.worker.state` do (`delivery_tag_of`).
- Keras' BackupAndRestore saves through its private `_save_model()`, and tells `fit` which epoch
  to resume from through the model's private `_initial_epoch` (`save_backup`, `initial_epoch`).
- Celery logs each task's success through the `celery.app.trace` logger with a dict of
  arguments holding `id` and `return_value` (the result's repr, up to 1 KB); a predict chunk's
  result is its probabilities, so the worker replaces it with a summary line
  (`TaskResultSummaries`).
- TensorFlow says whether its oneDNN CPU kernels run only through a private module
  (`onednn_enabled`).
- Optuna keeps a trial's storage id, which `Trial(study, trial_id)` needs in the worker that
  reports a trial another worker asked, only as `_trial_id` (`optuna_trial_id`;
  tests/unit/test_sweep_space.py checks it).

Celery's result-backend key format is in digitq.common.celery_keys, where the client can import it.
Nothing here imports Celery's worker, Keras or TensorFlow until a function is called.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("digitq.worker")

# --- kombu: the Redis transport's index of un-acked messages ---------------------------------

UNACKED_INDEX_KEY = "unacked_index"
"""kombu's Redis transport: sorted set of un-acked delivery tags, scored by delivery time
(unix seconds); `Channel.unacked_index_key`'s default in kombu 4 and 5."""


def refresh_unacked(r, delivery_tag: str, key: str = UNACKED_INDEX_KEY) -> None:
    """Mark the un-acked message `delivery_tag` as delivered now, so that kombu does not hand it
    to another worker for another `visibility_timeout` seconds. XX: only while it is un-acked;
    an acked message is never put back."""
    r.zadd(key, {delivery_tag: time.time()}, xx=True)


# --- Celery: the worker's own record of the messages it runs ---------------------------------


def delivery_tag_of(task_id: str) -> str | None:
    """The broker's delivery tag of the message this worker process runs as `task_id` (what the
    lease refreshes in kombu's unacked index), or None with a warning.

    Celery's task context does not carry it: its `delivery_info` holds exchange, routing key,
    priority and redelivered only; the worker's request objects (`celery.worker.state`) do."""
    from celery.worker import state

    for req in [*state.active_requests, *state.reserved_requests]:
        if req.id == task_id:
            return getattr(req.message, "delivery_tag", None)
    log.warning("no delivery tag for job %s: a run longer than the visibility timeout will be redelivered", task_id)
    return None


# --- Keras: BackupAndRestore's save and the epoch fit resumes from ---------------------------


def save_backup(callback) -> None:
    """Make a `keras.callbacks.BackupAndRestore` save its backup now (weights and training state),
    whatever its `save_freq`."""
    callback._save_model()


def initial_epoch(model) -> int:
    """The epoch `fit` starts from: 0, or the epoch a BackupAndRestore restored the model to in
    its `on_train_begin` (Keras passes it to `fit` through the model's `_initial_epoch`)."""
    return int(getattr(model, "_initial_epoch", 0) or 0)


# --- TensorFlow: which CPU kernels run ------------------------------------------------------


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels (None if this TensorFlow cannot tell).
    Imports TensorFlow."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, but the only way to ask

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


# --- Celery: the "Task ... succeeded in ...: <result>" log line --------------------------------

TRACE_LOGGER = "celery.app.trace"
"""The logger through which Celery's task tracer logs each success (LOG_SUCCESS)."""


class TaskResultSummaries(logging.Filter):
    """Replaces the result repr in Celery's success line with a short summary for the tasks
    that set one (`summaries[task_id] = "500 images, 0 errors, digits:1"`): worker.log gets
    one line per predict chunk instead of its 5,000 probabilities."""

    def __init__(self):
        super().__init__()
        self.summaries: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict) and args.get("id") in self.summaries and "return_value" in args:
            record.args = {**args, "return_value": self.summaries.pop(args["id"])}
        return True

    def install(self) -> TaskResultSummaries:
        logging.getLogger(TRACE_LOGGER).addFilter(self)
        return self


# --- Optuna: a trial asked in one process, reported to from another (digitq.worker.sweep) ---------


def optuna_trial_id(trial) -> int:
    """The storage id of an Optuna trial (Trial or FrozenTrial): `Trial(study, trial_id)` rebuilds
    a trial that another process asked, and Optuna keeps the id only as the private `_trial_id`."""
    return int(trial._trial_id)
