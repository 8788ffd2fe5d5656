from digitq.common.schemas import TrainRequest
from digitq.worker.train import accelerator_options


def test_mixed_precision_and_xla_apply_on_gpus_and_warn_on_cpus():
    r = TrainRequest(precision="mixed", jit=True)
    assert accelerator_options(r, "GPU") == ("mixed_float16", True, [])
    policy, jit, warnings = accelerator_options(r, "CPU")
    assert (policy, jit) == ("float32", False) and len(warnings) == 2
    assert all("ignored: no GPU" in w for w in warnings)
    assert accelerator_options(TrainRequest(), "CPU") == ("float32", False, [])


def test_worker_gpus_option_is_validated_before_tensorflow_starts():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "digitq.worker", "--gpus", "x"], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "DIGITQ_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: DIGITQ_GPUS must be 'all' or GPU indices like '0,1', got 'x'"


def test_gpu_selection_sets_cuda_visible_devices(monkeypatch):
    import os

    from digitq.common.settings import load_settings
    from digitq.worker.devices import select_gpus_env

    monkeypatch.setenv("DIGITQ_GPUS", "1, 3")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    select_gpus_env(load_settings())
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,3"
