"""The worker's model cache: a loaded model is traced for every batch size before a chunk arrives.

TensorFlow runs in a subprocess: pytest's own process must not import it (other tests fork workers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

CHECK = """
import json, sys
from pathlib import Path
import keras
import numpy as np
from digitq.common.settings import Settings
from digitq.worker.predict import ModelCache

folder = Path(sys.argv[1])
inputs = keras.Input((28, 28, 1))
pixels = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
outputs = keras.layers.Dense(10, activation="softmax")(pixels)
path = folder / "model.keras"
keras.Model(inputs, outputs).save(path)
settings = Settings(home=folder, data_dir=folder, broker_url=None, result_backend=None)
model = ModelCache().get(path, settings)
traced = model.predict_function.experimental_get_tracing_count()
shapes = [list(np.asarray(model.predict_on_batch(np.zeros((n, 28, 28, 1), np.uint8))).shape)
          for n in (500, 137, 1, 5000)]
print(json.dumps({"shapes": shapes, "retraces": model.predict_function.experimental_get_tracing_count() - traced}))
"""


def test_loaded_model_does_not_retrace_on_the_first_chunks(tmp_path):
    """Chunk sizes differ from the warm-up batch (500 by default, and a short last chunk):
    none of them may pay a TensorFlow retrace while a user waits."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CHECK), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shapes"] == [[500, 10], [137, 10], [1, 10], [5000, 10]]
    assert out["retraces"] == 0
