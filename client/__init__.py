"""digitq.client: the `digitq` command line and the Python API that submits jobs by task name.

Needs only celery, redis, typer and rich: it never imports TensorFlow or digitq.worker's training code.
"""
