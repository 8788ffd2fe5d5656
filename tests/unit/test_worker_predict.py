"""The worker's model cache: a loaded model is traced for every batch size before a chunk arrives.

TensorFlow runs in a subprocess: pytest's own process must not import it (other tests fork workers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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


BF16 = """
import json, math, sys
from pathlib import Path
import keras
import numpy as np
from digitq.common.schemas import TrainRequest
from digitq.common.settings import Settings
from digitq.worker.data import load_mnist
from digitq.worker.model import build_model, compile_model, fold_batch_norm, resolve_hparams, with_precision

mnist = load_mnist(Settings(home=Path(sys.argv[1]), data_dir=Path(sys.argv[2]), broker_url=None, result_backend=None))
x, y = mnist["train_images"][:10000, :, :, None], mnist["train_labels"][:10000]
hp = resolve_hparams(TrainRequest(epochs=1))
model = build_model(hp)
compile_model(model, hp, math.ceil(len(x) / hp.batch_size))
model.fit(x, keras.utils.to_categorical(y, 10), batch_size=hp.batch_size, epochs=1, verbose=0)
f32 = fold_batch_norm(keras.Model(model.inputs, model.outputs))
bf16 = with_precision(f32, "bfloat16")
tx, ty = mnist["test_images"][:2000, :, :, None], mnist["test_labels"][:2000]
p32, p16 = np.asarray(f32.predict_on_batch(tx)), np.asarray(bf16.predict_on_batch(tx))
print(json.dumps({"same": with_precision(f32, "float32") is f32, "dtype": str(p16.dtype),
                  "policies": {l.name: l.dtype_policy.name for l in bf16.layers},
                  "acc32": float((p32.argmax(1) == ty).mean()), "acc16": float((p16.argmax(1) == ty).mean()),
                  "agree": float((p32.argmax(1) == p16.argmax(1)).mean()), "gap": float(np.abs(p32 - p16).max())}))
"""


def test_bfloat16_inference_gives_the_same_answers(tmp_path):
    """What a worker on a CPU with AMX serves (DIGITQ_INFERENCE_PRECISION=auto): the model in
    bfloat16 but its probabilities in float32, and the same digits as in float32 (a fast-cnn
    trained 1 epoch on 10,000 MNIST digits, 2,000 test digits)."""
    data_dir = os.environ.get("DIGITQ_DATA_DIR") or str(Path(__file__).resolve().parents[3] / "shared" / "data")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(BF16), str(tmp_path), data_dir], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same"] and out["dtype"] == "float32"
    policies = out["policies"]
    assert policies.pop("pixels") == "float32" and policies.pop("probabilities") == "float32"
    assert set(policies.values()) == {"mixed_bfloat16"}
    assert out["acc32"] > 0.9 and abs(out["acc16"] - out["acc32"]) <= 0.002
    assert out["agree"] >= 0.997 and out["gap"] < 0.05
