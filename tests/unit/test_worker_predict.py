"""The worker's model cache: a loaded model is traced for every batch size before a chunk arrives."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from digitq.common.settings import Settings  # noqa: E402
from digitq.worker.predict import ModelCache  # noqa: E402


def test_loaded_model_does_not_retrace_on_the_first_chunks(tmp_path):
    """Chunk sizes differ from the warm-up batch (500 by default, and a short last chunk):
    none of them may pay a TensorFlow retrace while a user waits."""
    inputs = keras.Input((28, 28, 1))
    pixels = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(10, activation="softmax")(pixels)
    path = tmp_path / "model.keras"
    keras.Model(inputs, outputs).save(path)
    settings = Settings(home=tmp_path, data_dir=tmp_path, broker_url=None, result_backend=None)

    model = ModelCache().get(path, settings)
    traced = model.predict_function.experimental_get_tracing_count()
    for chunk in (500, 137, 1, 5000):
        probs = model.predict_on_batch(np.zeros((chunk, 28, 28, 1), np.uint8))
        assert np.asarray(probs).shape == (chunk, 10)
    assert model.predict_function.experimental_get_tracing_count() == traced
