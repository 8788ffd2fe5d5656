"""digitq.client: `Client` (api.py), the one front door to a digitq service, and the `digitq`
command line built on it (cli/).

Needs only celery, redis, typer, rich, NumPy and Pillow: it never imports TensorFlow or digitq.worker.
`from digitq.client import Client` imports the API (and Celery) only when it is asked for, so the
command line starts without it.
"""

__all__ = ["Client", "JobStatus", "connect"]


def __getattr__(name: str):
    if name in __all__:
        from digitq.client import api

        return getattr(api, name)
    raise AttributeError(f"module 'digitq.client' has no attribute {name!r}")
