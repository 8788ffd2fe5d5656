"""A fresh interpreter set up like the GPU machine: Keras on JAX, and TensorFlow not importable.

The GPU machine has JAX but no TensorFlow. Here TensorFlow is installed, and Keras imports it
whenever it can (e.g. to serialise a layer), so a blocker on `sys.meta_path` makes any import of
it fail: code that needs TensorFlow fails as it would there, and Keras falls back as it does there.
pytest's own process must import neither (other tests fork workers), hence the subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

HAVE_JAX = importlib.util.find_spec("jax") is not None
"""JAX is installed here (`pip install jax jaxlib`); the tests that use it skip otherwise."""

SKIP_REASON = "needs JAX (pip install jax jaxlib): Keras' JAX backend runs the recipe as on the GPU machine"

NO_TENSORFLOW = '''
import sys
class _NoTensorFlow:
    """Import finder: TensorFlow is absent, as on the GPU machine."""
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the GPU machine has no TensorFlow)")
        return None
sys.meta_path.insert(0, _NoTensorFlow())
'''


def jax_env(**extra: str) -> dict:
    """The current environment with KERAS_BACKEND=jax, JAX on the CPU and quiet logs."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.update(extra)
    return env


def run_without_tensorflow(code: str, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run `code` (with `args` in sys.argv[1:]) under Keras' JAX backend with TensorFlow blocked."""
    return subprocess.run([sys.executable, "-c", NO_TENSORFLOW + textwrap.dedent(code), *args], env=jax_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def last_json(proc: subprocess.CompletedProcess) -> dict:
    """The JSON object on the last line of a successful run's stdout."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
