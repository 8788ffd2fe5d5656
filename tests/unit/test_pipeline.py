"""The training input pipeline and the strategy choice, on real MNIST images.

The service trains on one endless dataset (`repeat=True` with `steps_per_epoch`) with tf.data
autotuning off, and uses MirroredStrategy only with 2 or more devices: tf.data iterator
teardown stalled training for 8-28 s here, mostly under a one-device MirroredStrategy.

TensorFlow runs in subprocesses (pytest's own process must not import it: other tests fork
workers); they print JSON and the tests below check it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PIPELINE = """
import json
import numpy as np
from digitq.common.settings import load_settings
from digitq.worker.data import Split, load_mnist, make_images_dataset, make_tf_dataset

m = load_mnist(load_settings())
split = Split(m["train_images"][:300], m["train_labels"][:300])
once = make_tf_dataset(split, 128, shuffle=True, seed=3)
endless = make_tf_dataset(split, 128, shuffle=True, seed=3, repeat=True)
batches = [(x.numpy(), y.numpy()) for x, y in endless.take(6)]
passes = [batches[:3], batches[3:]]
out = {
    "once_sizes": [int(x.shape[0]) for x, _ in once],
    "endless_sizes": [int(x.shape[0]) for x, _ in batches],
    # each pass holds every image exactly once: its label counts are the split's
    "passes_complete": [bool((np.bincount(np.concatenate([y.argmax(1) for _, y in p]), minlength=10)
                              == np.bincount(split.y, minlength=10)).all()) for p in passes],
    "passes_reshuffled": not all(np.array_equal(a[0], b[0]) for a, b in zip(*passes)),
    "autotune": [once.options().autotune.enabled, endless.options().autotune.enabled],
    "images_sizes": [int(x.shape[0]) for x in make_images_dataset(m["test_images"][:250, :, :, None], 100)],
}
print(json.dumps(out))
"""

STRATEGY = """
import json
from digitq.common.settings import load_settings
from digitq.worker.devices import make_strategy

s = make_strategy(load_settings())
print(json.dumps({"type": type(s).__name__, "replicas": s.num_replicas_in_sync}))
"""


def _run(code: str, data_dir, **env) -> dict:
    env = {**os.environ, "DIGITQ_DATA_DIR": str(data_dir), "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pipeline(data_dir) -> dict:
    return _run(PIPELINE, data_dir)


def test_an_endless_dataset_repeats_whole_reshuffled_passes(pipeline):
    assert pipeline["once_sizes"] == [128, 128, 44]
    assert pipeline["endless_sizes"] == [128, 128, 44] * 2  # each pass ends in the same partial batch
    assert pipeline["passes_complete"] == [True, True]
    assert pipeline["passes_reshuffled"]


def test_pipelines_do_not_autotune(pipeline):
    assert pipeline["autotune"] == [False, False]
    assert pipeline["images_sizes"] == [100, 100, 50]


@pytest.mark.parametrize("replicas, kind", [("1", "_DefaultDistributionStrategy"), ("2", "MirroredStrategy")])
def test_mirrored_strategy_only_with_two_or_more_devices(data_dir, replicas, kind):
    out = _run(STRATEGY, data_dir, DIGITQ_CPU_REPLICAS=replicas)
    assert out == {"type": kind, "replicas": int(replicas)}
