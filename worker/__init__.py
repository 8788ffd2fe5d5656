"""digitq.worker: the Celery worker that trains and runs the digit models (TensorFlow/Keras).

Modules that need TensorFlow import it themselves; importing this package does not.
"""
