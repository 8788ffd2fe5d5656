"""The worker's result backend: Celery's Redis (or Sentinel) backend, patient when Redis is full.

With `maxmemory` reached and `maxmemory-policy noeviction`, Redis refuses every write that
needs memory (OutOfMemoryError). Celery then fails to store a job's final state, and its tracer
lets that error out of the worker's consumer: the worker exits ("Unrecoverable error:
OutOfMemoryError"). Here a final state (SUCCESS, FAILURE, REVOKED) waits until Redis has room
again, the job's message staying un-acked meanwhile (so nothing is lost if the worker dies), and
an informational one (STARTED, PROGRESS) is dropped with one warning per episode: the next
report replaces it.

    app.backend_cls = backend_class_path(url) + "+" + url    (digitq.worker.app does this)
"""

from __future__ import annotations

import logging

from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend

from digitq.common.redis_client import OUT_OF_MEMORY_MESSAGE, is_out_of_memory, is_sentinel_url, while_full

log = logging.getLogger("digitq.worker")


PROBE_KEY = "digitq:probe:writable"


class WaitsWhenFull:
    """Mixin over Celery's Redis backends (see the module docstring)."""

    _full_noted = False

    def store_result(self, task_id, result, state, *args, **kwargs):
        if state not in states.READY_STATES:
            try:
                out = super().store_result(task_id, result, state, *args, **kwargs)
                self._full_noted = False
                return out
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if not self._full_noted:
                    self._full_noted = True
                    log.warning("%s report of %s not stored: %s", state, task_id, OUT_OF_MEMORY_MESSAGE)
                return result
        return while_full(lambda: super(WaitsWhenFull, self).store_result(task_id, result, state, *args, **kwargs),
                          f"the {state} state of {task_id} waits (its message stays un-acked)",
                          f"the {state} state of {task_id} is stored")


class PatientRedisBackend(WaitsWhenFull, RedisBackend):
    """RedisBackend whose final writes wait for room."""


class PatientSentinelBackend(WaitsWhenFull, SentinelBackend):
    """SentinelBackend whose final writes wait for room."""


def backend_class_path(url: str) -> str:
    """Celery's `module:Class` name of the patient backend for `url`."""
    cls = PatientSentinelBackend if is_sentinel_url(url) else PatientRedisBackend
    return f"{__name__}:{cls.__name__}"


def wait_until_writable(r, what: str) -> None:
    """Block until Redis accepts a small write again (after an OutOfMemoryError), saying so once."""
    while_full(lambda: r.set(PROBE_KEY, b"1", ex=10), f"{what} waits", f"{what} goes on")
