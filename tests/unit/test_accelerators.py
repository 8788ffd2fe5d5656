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


def test_onednn_is_preferred_on_x86_64_unless_the_user_chose():
    from digitq.worker.devices import prefer_onednn

    env = {}
    prefer_onednn(env, machine="x86_64")
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    env = {}
    prefer_onednn(env, machine="AMD64")
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    env = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    prefer_onednn(env, machine="x86_64")
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "0"}  # the user's choice stands
    env = {}
    prefer_onednn(env, machine="aarch64")
    assert env == {}  # TensorFlow's own default elsewhere


def _onednn_in_fresh_tensorflow(**env_extra) -> str:
    """What TensorFlow reports in a fresh interpreter that chooses the CPU kernels first, as the
    worker's main does (tests/unit/test_worker_startup.py checks that main does)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", **env_extra)
    code = ("from digitq.worker.devices import onednn_enabled, prefer_onednn\nprefer_onednn()\n"
            "import os\nprint(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), onednn_enabled())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_the_worker_runs_tensorflow_with_onednn_on_x86_64():
    import platform

    import pytest

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("oneDNN is only chosen by digitq on x86-64")
    assert _onednn_in_fresh_tensorflow() == "1 True"
    assert _onednn_in_fresh_tensorflow(TF_ENABLE_ONEDNN_OPTS="0") == "0 False"


def test_inference_runs_in_bfloat16_only_where_the_cpu_has_bfloat16_arithmetic(tmp_path):
    from digitq.common.settings import Settings
    from digitq.worker.devices import cpu_flags, inference_precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    amx = cpu_flags(str(cpuinfo))
    assert {"amx_bf16", "avx512_bf16"} <= amx and cpu_flags(str(tmp_path / "none")) == frozenset()
    settings = lambda p: Settings(home=tmp_path, data_dir=tmp_path, broker_url=None, result_backend=None,  # noqa: E731
                                  inference_precision=p)
    assert inference_precision(settings("auto"), "CPU", amx) == "bfloat16"
    assert inference_precision(settings("auto"), "CPU", frozenset({"avx512f", "avx512_bf16"})) == "bfloat16"  # AMD Zen 4 on
    assert inference_precision(settings("auto"), "CPU", frozenset({"avx2", "fma", "avx512f"})) == "float32"  # emulated
    assert inference_precision(settings("auto"), "GPU", amx) == "float32"
    assert inference_precision(settings("float32"), "CPU", amx) == "float32"
    assert inference_precision(settings("bfloat16"), "CPU", frozenset()) == "bfloat16"
