"""digitq.worker: the Celery worker that trains and runs the digit models (TensorFlow/Keras).

Modules that need TensorFlow import it themselves; importing this package does not, but it
does choose TensorFlow's CPU kernels first (see devices.prefer_onednn), since TensorFlow reads
that choice only when it starts.
"""

from digitq.worker.devices import prefer_onednn

prefer_onednn()
