"""The recipe is backend-agnostic Keras 3: digitq.worker.model (model, schedule, optimizer,
compile step), the recipe's callbacks and the NumPy shift run under KERAS_BACKEND=jax with
TensorFlow absent, as on the GPU machine, and what JAX trains the TensorFlow worker serves.

One JAX interpreter trains on 512 real MNIST digits and writes its measurements and a model;
one TensorFlow interpreter then loads that model through the worker's predict path and checks
the NumPy shift against the tf.data one (tests/unit/jax_env.py says why in subprocesses).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest

from tests.unit.jax_env import HAVE_JAX, SKIP_REASON, last_json, run_without_tensorflow

pytestmark = pytest.mark.skipif(not HAVE_JAX, reason=SKIP_REASON)

ON_JAX = """
import json, sys
from pathlib import Path
import numpy as np

import digitq.worker.augment as augment  # every module the recipe needs imports without TensorFlow
import digitq.worker.callbacks as cb
import digitq.worker.data
import digitq.worker.model as M
import digitq.worker.train
import keras
from digitq.common.schemas import TrainRequest
from digitq.common.settings import load_settings
from digitq.worker.backup import BackupStore
from digitq.worker.data import load_mnist

folder = Path(sys.argv[1])
m = load_mnist(load_settings())
x, y = m["train_images"][:512, :, :, None], m["train_labels"][:512]
one_hot = np.eye(10, dtype=np.float32)[y]
hp = M.resolve_hparams(TrainRequest())
out = {"backend": keras.backend.backend()}


class Crash(keras.callbacks.Callback):
    # A worker dying at the start of the second epoch, after the first epoch's backup.
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("worker died")


def fit(extra):
    keras.utils.set_random_seed(0)
    model = M.build_model(hp, *digitq.worker.train._pixel_stats(x, True))
    M.compile_model(model, hp, total_steps=2 * 4)
    store = BackupStore(folder / "backup")
    resume = store.restore(model, 4, 2)
    reports = []
    callbacks = [cb.HistoryCallback(folder / "history.json", len(x), test=(x[:256], y[:256]), start_epoch=resume.epoch,
                                    resumed=resume.source is not None, steps_per_epoch=4),
                 cb.BackupCallback(store, 4, every=3),
                 cb.ProgressCallback(reports.append, 2, 4, 128), cb.CancelCallback(lambda: False), *extra]
    model.fit(augment.make_numpy_shifter(0)(x), one_hot, batch_size=128, epochs=2, initial_epoch=resume.epoch,
              callbacks=callbacks, verbose=0)
    return model, reports

try:
    fit([Crash()])
except RuntimeError as exc:
    out["crashed"] = str(exc)
model, reports = fit([])
out["jit_compile"] = model.jit_compile
out["history"] = json.loads((folder / "history.json").read_text())
out["progress_reports"] = len(reports)

schedule = M.OneCycle(3e-3, 100)
out["onecycle"] = [float(schedule(s)) for s in (0, 12, 25, 60, 100)]
out["folded"] = M.fold_batch_norm(model, probe=x[:64]) is not model

keras.mixed_precision.set_global_policy("mixed_bfloat16")
try:
    mixed = M.build_model(hp)
finally:
    keras.mixed_precision.set_global_policy("float32")
out["bf16"] = [next(l for l in mixed.layers if isinstance(l, keras.layers.Conv2D)).compute_dtype, str(mixed.predict(x[:4], verbose=0).dtype)]

keras.Model(model.inputs, model.outputs, name=model.name).save(folder / "model.keras")
np.save(folder / "probe.npy", x[:256])
np.save(folder / "jax_probs.npy", model.predict(x[:256], verbose=0))
out["tensorflow_imported"] = "tensorflow" in sys.modules
print(json.dumps(out))
"""

ON_TENSORFLOW = """
import json, sys
from pathlib import Path
import numpy as np
from digitq.worker.devices import prefer_onednn
prefer_onednn()
import tensorflow as tf
from digitq.common.settings import load_settings
from digitq.worker.augment import _inverse_affine, _transform, shift_images
from digitq.worker.predict import predict_pixels

folder = Path(sys.argv[1])
probe = np.load(folder / "probe.npy")
probs = predict_pixels(load_settings(), {"path": str(folder / "model.keras")}, probe[..., 0])
gap = float(np.abs(probs - np.load(folder / "jax_probs.npy")).max())

x = probe[:64].astype(np.float32)
offsets = np.random.default_rng(0).integers(-2, 3, (64, 2))
still, unit = tf.zeros((64,)), tf.ones((64,))
ref = _transform(tf.constant(x), _inverse_affine(still, still, unit, tf.constant(offsets, tf.float32), 28, 28),
                 "NEAREST").numpy()
print(json.dumps({"backend": __import__("keras").backend.backend(), "gap": gap,
                  "shift_gap": float(np.abs(ref - shift_images(x, offsets)).max())}))
"""


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("jax")
    home = tmp_path_factory.mktemp("home")
    out = last_json(run_without_tensorflow(ON_JAX, str(folder), DIGITQ_DATA_DIR=str(data_dir), DIGITQ_HOME=str(home)))
    return folder, out


def test_the_recipe_trains_on_jax_without_tensorflow(jax_run):
    _, out = jax_run
    assert out["backend"] == "jax" and not out["tensorflow_imported"]
    assert out["jit_compile"] is True  # XLA, not op-by-op: compile_model's jit=False is TensorFlow's switch only
    first, second = out["history"]
    assert (first["epoch"], second["epoch"]) == (1, 2)
    assert math.isfinite(second["loss"]) and second["loss"] < first["loss"]
    assert 0.0 <= second["test_accuracy"] <= 1.0 and second["train_elapsed"] > 0
    assert out["progress_reports"] >= 1
    assert out["folded"]
    assert out["bf16"] == ["bfloat16", "float32"]  # bf16 compute, float32 probabilities


def test_a_worker_dying_mid_job_resumes_from_its_backup_on_jax(jax_run):
    _, out = jax_run
    assert out["crashed"] == "worker died"
    assert [e.get("resumed", False) for e in out["history"]] == [False, True]  # epoch 1 from the backup


def test_the_one_cycle_schedule_is_the_same_formula_on_jax(jax_run):
    _, out = jax_run
    peak, total, warm = 3e-3, 100, 25.0

    def expected(step):
        if step < warm:
            return peak / 25 + (peak - peak / 25) * step / warm
        progress = min(max((step - warm) / (total - warm), 0.0), 1.0)
        return peak * (1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * progress)))

    assert out["onecycle"] == pytest.approx([expected(s) for s in (0, 12, 25, 60, 100)], rel=1e-5)


def test_a_model_trained_on_jax_serves_on_the_tensorflow_worker_and_shifts_match(jax_run, data_dir, tmp_path):
    folder, _ = jax_run
    env = {**os.environ, "DIGITQ_HOME": str(folder), "DIGITQ_DATA_DIR": str(data_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(ON_TENSORFLOW), str(folder)], env=env,
                          capture_output=True, text=True, timeout=300)
    out = last_json(proc)
    assert out["backend"] == "tensorflow"
    assert out["gap"] < 1e-4  # same probabilities from the same weights, batch norm folded or not
    assert out["shift_gap"] == 0.0  # the NumPy shift moves the same pixels as the tf.data one
