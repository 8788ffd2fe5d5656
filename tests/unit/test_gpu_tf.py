"""The worker's TensorFlow path on GPUs: memory growth, DIGITQ_GPUS pinning, MirroredStrategy over
the GPUs, mixed precision, and a GPU-trained model served by a CPU-only worker.

They run wherever TensorFlow with GPU support (the `gpu` extra) sees a GPU, and skip elsewhere
(CI, the development machines, and the GPU check's machine, which has no TensorFlow). Each runs
TensorFlow in a fresh interpreter, as the worker does: GPU selection and memory growth are fixed
when TensorFlow starts, and pytest's own process must not start it (other tests fork workers).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gpu


def _nvidia_gpus() -> int:
    """GPUs the NVIDIA driver lists (0 without nvidia-smi), without starting TensorFlow."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in proc.stdout.splitlines()) if proc.returncode == 0 else 0


def _skip_reason() -> str | None:
    if importlib.util.find_spec("tensorflow") is None:
        return "needs TensorFlow (pip install -e '.[gpu]') and a GPU: TensorFlow is not installed here"
    if not _nvidia_gpus():
        return "needs TensorFlow and a GPU: nvidia-smi lists none here"
    return None


SKIP = _skip_reason()
if SKIP:
    pytestmark = [pytest.mark.gpu, pytest.mark.skip(reason=SKIP)]


def run_tf(code: str, env_extra: dict, timeout: float = 900) -> dict:
    """Run `code` in a fresh interpreter with the worker's start-up order (CPU kernels, then the
    GPU selection, before TensorFlow starts) and return the JSON its last line printed.
    `env_extra` values of None remove the variable (CUDA_VISIBLE_DEVICES="" would hide every GPU)."""
    prelude = ("import json, os\n"
               "from digitq.common.settings import load_settings\n"
               "from digitq.worker.devices import configure_devices, prefer_onednn, select_gpus_env\n"
               "prefer_onednn()\nsettings = load_settings()\nselect_gpus_env(settings)\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env_extra, "KERAS_BACKEND": None}
    env = {k: v for k, v in env.items() if v is not None}
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def visible_gpus(tmp_path_factory) -> int:
    """GPUs TensorFlow sees (a tensorflow-cpu build sees none: then the tests skip)."""
    out = run_tf("import tensorflow as tf\nprint(json.dumps(len(tf.config.list_physical_devices('GPU'))))", {})
    if not out:
        pytest.skip("needs TensorFlow with GPU support: this TensorFlow sees no GPU (a tensorflow-cpu build?)")
    return out


UNPINNED = {"DIGITQ_GPUS": None, "DIGITQ_CPU_REPLICAS": None, "CUDA_VISIBLE_DEVICES": None}
"""Every GPU this machine has, whatever the calling environment pinned."""


@pytest.fixture
def gpu_env(tmp_path, data_dir) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    return {"DIGITQ_HOME": str(home), "DIGITQ_DATA_DIR": str(data_dir), **UNPINNED}


DEVICES = """
import tensorflow as tf
info = configure_devices(settings)
gpus = tf.config.list_physical_devices("GPU")
print(json.dumps({**info, "growth": [tf.config.experimental.get_memory_growth(g) for g in gpus],
                  "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}))
"""


def test_every_gpu_gets_memory_growth(visible_gpus, gpu_env):
    info = run_tf(DEVICES, gpu_env)
    assert info["device_type"] == "GPU" and info["replicas"] == visible_gpus == len(info["gpus"])
    assert info["growth"] == [True] * visible_gpus
    assert info["warnings"] == []


def test_digitq_gpus_pins_the_worker_to_the_named_gpus(visible_gpus, gpu_env):
    last = str(visible_gpus - 1)
    info = run_tf(DEVICES, {**gpu_env, "DIGITQ_GPUS": last})
    assert info["cuda_visible"] == last
    assert (info["device_type"], info["replicas"], len(info["gpus"])) == ("GPU", 1, 1)
    if visible_gpus >= 2:
        info = run_tf(DEVICES, {**gpu_env, "DIGITQ_GPUS": "0,1"})
        assert (info["cuda_visible"], info["replicas"]) == ("0,1", 2)


TRAIN = """
import sys
import numpy as np
from digitq.common.schemas import TrainRequest
from digitq.worker.devices import make_strategy
from digitq.worker.train import train

request = TrainRequest.from_dict(json.loads(sys.argv[1]))
strategy = make_strategy(settings)
result = train(request, "gpu-check-job", settings)
import keras
model = keras.models.load_model(result.model_path, compile=False)
print(json.dumps({"strategy": type(strategy).__name__, "replicas_in_sync": strategy.num_replicas_in_sync,
                  "result": result.to_dict(), "conv_dtype": next(l for l in model.layers if isinstance(l, keras.layers.Conv2D)).compute_dtype,
                  "output_dtype": model.get_layer("probabilities").compute_dtype}))
"""

SMALL_JOB = dict(train_size=8192, validation_size=1024, test_size=2048, epochs=2)
"""A job that trains in seconds on a GPU and still learns (over 90% on the test slice)."""


def _train(env: dict, **request) -> dict:
    code = TRAIN.replace("json.loads(sys.argv[1])", repr({**SMALL_JOB, **request}))
    return run_tf(code, env)


def test_mirrored_strategy_trains_on_every_gpu(visible_gpus, gpu_env):
    if visible_gpus < 2:
        pytest.skip(f"needs 2+ GPUs for MirroredStrategy over GPUs; TensorFlow sees {visible_gpus}")
    out = _train(gpu_env)
    assert (out["strategy"], out["replicas_in_sync"]) == ("MirroredStrategy", visible_gpus)
    result = out["result"]
    assert result["replicas"] == visible_gpus and len(result["devices"]) == visible_gpus
    assert result["test_accuracy"] > 0.9


@pytest.fixture(scope="module")
def mixed_job(visible_gpus, tmp_path_factory, data_dir) -> dict:
    """One job trained on the GPUs under mixed precision; its model is reused below."""
    home = tmp_path_factory.mktemp("mixed-home")
    env = {"DIGITQ_HOME": str(home), "DIGITQ_DATA_DIR": str(data_dir), **UNPINNED}
    return {"env": env, **_train(env, precision="mixed")}


def test_mixed_precision_trains_in_float16_on_gpus(mixed_job):
    result = mixed_job["result"]
    assert result["warnings"] == []  # not "ignored: no GPU"
    assert mixed_job["conv_dtype"] == "float16" and mixed_job["output_dtype"] == "float32"
    assert result["test_accuracy"] > 0.9


SERVE_ON_CPU = """
import sys
import numpy as np
from digitq.worker.data import load_mnist
from digitq.worker.predict import predict_pixels

info = configure_devices(settings)
m = load_mnist(settings)
x, y = m["test_images"][:TEST_SIZE], m["test_labels"][:TEST_SIZE]
probs = predict_pixels(settings, {"path": sys.argv[1]}, x)
print(json.dumps({"device_type": info["device_type"], "accuracy": float((probs.argmax(1) == y).mean())}))
"""


def test_a_gpu_trained_model_serves_on_a_cpu_only_worker(mixed_job):
    result = mixed_job["result"]
    code = SERVE_ON_CPU.replace("sys.argv[1]", repr(result["model_path"])).replace(
        "TEST_SIZE", str(SMALL_JOB["test_size"]))  # the images the job's test_accuracy is over
    out = run_tf(code, {**mixed_job["env"], "CUDA_VISIBLE_DEVICES": "-1"})  # no GPU visible: a CPU-only worker
    assert out["device_type"] == "CPU"
    assert abs(out["accuracy"] - result["test_accuracy"]) <= 0.005  # float16 on the GPU vs the CPU's kernels
