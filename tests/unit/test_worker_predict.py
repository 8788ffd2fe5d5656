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


FOLD = """
import json, sys
from pathlib import Path
import keras
import numpy as np
from digitq.common.schemas import TrainRequest
from digitq.common.settings import Settings
from digitq.worker.model import build_model, fold_batch_norm, resolve_hparams
from digitq.worker.predict import ModelCache

rng = np.random.default_rng(0)
def trained_like(arch, gamma_low=0.5):
    m = build_model(resolve_hparams(TrainRequest(arch=arch)))
    for layer in m.layers:  # batch-norm statistics far from the identity, as after training
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(gamma_low, 2, n), rng.normal(0, 1, n), rng.normal(0, 3, n),
                               rng.uniform(0.1, 9, n)])
    return m

digits = rng.integers(0, 256, (64, 28, 28, 1)).astype(np.uint8)
kinds = lambda m: sorted({type(l).__name__ for l in m.layers})
gaps = lambda a, b: float(np.abs(np.asarray(a.predict_on_batch(digits)) - np.asarray(b.predict_on_batch(digits))).max())
model = trained_like("fast-cnn")  # conv, max-pool, batch norm
folded = fold_batch_norm(model)
gap = gaps(folded, model)
cnn = trained_like("cnn")  # conv, batch norm
cnn_folded = fold_batch_norm(cnn)
negative = trained_like("fast-cnn", gamma_low=-2)  # a negative scale: max-pooling would become min-pooling

inputs = keras.Input((28, 28, 1))
conv = keras.layers.Conv2D(4, 3, padding="same")(inputs)
branch = keras.layers.BatchNormalization()(conv)
joined = keras.layers.Add()([conv, branch])  # a skip connection: not a chain of layers
outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(joined))
skip = keras.Model(inputs, outputs)
seed = build_model(resolve_hparams(TrainRequest(arch="seed-cnn")))

folder = Path(sys.argv[1])
model.save(folder / "model.keras")
cached = ModelCache().get(folder / "model.keras", Settings(home=folder, data_dir=folder, broker_url=None,
                                                                  result_backend=None))
print(json.dumps({"before": kinds(model), "after": kinds(folded), "gap": gap,
                  "cnn_after": kinds(cnn_folded), "cnn_gap": gaps(cnn_folded, cnn),
                  "negative_kept": fold_batch_norm(negative) is negative,
                  "skip_kept": fold_batch_norm(skip) is skip, "seed_kept": fold_batch_norm(seed) is seed,
                  "cached": kinds(cached)}))
"""


def test_batch_norm_is_folded_into_the_convolutions_for_inference(tmp_path):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(FOLD), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "BatchNormalization" in out["before"] and "BatchNormalization" not in out["after"]
    assert "BatchNormalization" not in out["cached"]  # what the worker serves
    assert out["gap"] < 1e-5 and out["cnn_gap"] < 1e-5  # the same probabilities, up to float32 rounding
    assert "BatchNormalization" not in out["cnn_after"]
    assert out["negative_kept"]  # a batch norm after pooling with a negative scale cannot move before it
    assert out["skip_kept"] and out["seed_kept"]  # not a chain / nothing to fold: the model as it is
