"""digitq.common: what the client and the worker share (settings, task names, job schemas, errors).

Never imports TensorFlow: the client installs without it.
"""
