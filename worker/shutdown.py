"""The worker's stop request: SIGTERM (`docker stop`, `digitq local down`) or Ctrl-C asks a
running training job to save a backup at its next batch and hand itself back to the queue.

Celery's own signal handlers run first (they set its warm-shutdown flag and send
`worker_shutting_down`, which digitq.worker.app connects to `request`); a training job polls
`requested()` after every batch (digitq.worker.callbacks.BackupCallback). Nothing else happens
inside the signal handler: no logging, no Redis, only an Event set.
"""

from __future__ import annotations

import threading

_requested = threading.Event()


def request(*_, **__) -> None:
    """Ask the running job (if any) to stop and hand itself back. Safe in a signal handler."""
    _requested.set()


def requested() -> bool:
    """True once this worker process was asked to stop."""
    return _requested.is_set()


def reset() -> None:
    """Forget a request (tests that run several jobs in one process)."""
    _requested.clear()
