"""Where Celery's Redis result backend keeps a task's state: the one place that knows the key format.

Celery does not offer a call that reads a task's state as plain JSON without its exception
classes; digitq reads the key itself (the client's `status`, `wait`, `jobs`). The format is
Celery's `KeyValueStoreBackend.task_keyprefix` + task id, not a documented API:
tests/unit/test_adapters.py fails when the installed Celery writes somewhere else.
"""

TASK_META_PREFIX = "celery-task-meta-"
"""Celery's prefix of a task's result-backend key (5.x): the state, result and traceback as JSON."""


def task_meta_key(task_id: str) -> str:
    """The result-backend key of task `task_id`: a JSON object with `status` and `result`."""
    return TASK_META_PREFIX + task_id
