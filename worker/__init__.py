"""digitq.worker: the Celery worker that trains and runs the digit models (TensorFlow/Keras).

Importing this package, or any module in it, has no side effects: no Celery app, no Redis
client, no TensorFlow settings. The worker sets itself up when it starts (`digitq-worker`,
`python -m digitq.worker`: see __main__.py and app.py). Modules that need TensorFlow import it
themselves; a process that imports them should call `devices.prefer_onednn()` first, as the
worker does, to get the worker's CPU kernels.
"""
