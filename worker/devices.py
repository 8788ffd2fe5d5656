"""Which devices this worker trains on, set up before TensorFlow's runtime starts.

GPUs: `DIGITQ_GPUS` (e.g. "0,1") picks the GPUs this worker owns, through CUDA_VISIBLE_DEVICES,
which must be set before TensorFlow is imported; memory growth is on so a job takes only what
it needs. Without GPUs, `DIGITQ_CPU_REPLICAS=N` splits the CPU into N logical devices so the
multi-replica MirroredStrategy path runs exactly as it would on N GPUs.

CPUs: TensorFlow's oneDNN kernels are turned on for x86-64 (`prefer_onednn`, which the worker's
main runs before anything imports TensorFlow) unless TF_ENABLE_ONEDNN_OPTS says otherwise.
"""

from __future__ import annotations

import functools
import logging
import os
import platform

from digitq.common.errors import DigitqError
from digitq.common.settings import Settings
from digitq.worker.compat import onednn_enabled

log = logging.getLogger("digitq.worker")

_configured: dict = {}


def prefer_onednn(environ=os.environ, machine: str | None = None) -> None:
    """Turn on TensorFlow's oneDNN CPU kernels on x86-64, unless TF_ENABLE_ONEDNN_OPTS is set.

    TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX. On AVX2-only
    CPUs it leaves them off, and the default cnn trains and evaluates markedly slower without them
    (BENCHMARKS.md, `bench/suite.py --only onednn`). TensorFlow reads the variable when it starts,
    so this must run before `import tensorflow`: the worker's main calls it first, and so must any
    other process that runs digitq's models and wants the worker's kernels (export, benchmarks).
    Importing digitq.worker does not call it. TF_ENABLE_ONEDNN_OPTS=0 keeps them off.
    """
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64"):
        environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where there is no /proc/cpuinfo); read
    once per process: the model cache asks on every predict chunk."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def inference_precision(settings: Settings, device_type: str, flags: frozenset[str] | None = None) -> str:
    """"bfloat16" or "float32": DIGITQ_INFERENCE_PRECISION, where "auto" is bfloat16 on a CPU with
    bfloat16 arithmetic (AMX's matrix units, or AVX-512 BF16's dot products: oneDNN runs the
    default net faster on either with the same answers, BENCHMARKS.md) and float32 elsewhere,
    where bfloat16 would be emulated. On GPUs it is left to an explicit setting until measured."""
    if settings.inference_precision != "auto":
        return settings.inference_precision
    if device_type != "CPU":
        return "float32"
    return "bfloat16" if BF16_FLAGS & (cpu_flags() if flags is None else flags) else "float32"


BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
"""/proc/cpuinfo flags of CPUs with bfloat16 arithmetic (Intel from Cooper Lake and Sapphire
Rapids, AMD from Zen 4)."""


def select_gpus_env(settings: Settings) -> None:
    """Restrict CUDA to the GPUs in DIGITQ_GPUS. Call before `import tensorflow`."""
    if settings.gpus and settings.gpus.lower() != "all":
        ids = [g.strip() for g in settings.gpus.split(",") if g.strip()]
        if not all(g.isdigit() for g in ids):
            raise DigitqError(f"DIGITQ_GPUS must be 'all' or GPU indices like '0,1', got {settings.gpus!r}")
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)


def configure_devices(settings: Settings) -> dict:
    """Set memory growth on GPUs, or split the CPU into logical devices; once per process.

    Returns a description: {"gpus": [...names], "replicas": N, "device_type": "GPU"|"CPU", "warnings": [...]}.
    """
    if _configured:
        return _configured
    import tensorflow as tf

    warnings = []
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # runtime already started: growth can no longer change
            warnings.append(f"could not enable memory growth on {gpu.name}: {exc}")
    if gpus:
        if settings.cpu_replicas > 1:
            warnings.append("DIGITQ_CPU_REPLICAS is ignored: this machine has GPUs")
        names = []
        for gpu in gpus:
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
            except Exception:  # details are informative only
                names.append(gpu.name)
        info = {"device_type": "GPU", "gpus": names, "replicas": len(gpus)}
    else:
        if settings.gpus and settings.gpus.lower() != "all":
            warnings.append(f"DIGITQ_GPUS={settings.gpus} but TensorFlow sees no GPU: training on the CPU")
        replicas = max(settings.cpu_replicas, 1)
        if replicas > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            try:
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
            except RuntimeError:
                existing = len(tf.config.list_logical_devices("CPU"))
                warnings.append(
                    f"DIGITQ_CPU_REPLICAS={replicas} came after TensorFlow started; using {existing} CPU device(s)"
                )
                replicas = existing
        info = {"device_type": "CPU", "gpus": [], "replicas": replicas}
    for w in warnings:
        log.warning(w)
    info["warnings"] = warnings
    info["tensorflow"] = tf.__version__
    info["onednn"] = onednn_enabled()
    _configured.update(info)
    return _configured


def make_strategy(settings: Settings):
    """A MirroredStrategy over every GPU this worker owns, else over the (logical) CPU devices.

    With one device it is TensorFlow's default strategy instead: a one-device MirroredStrategy
    adds nothing but its costs (noticeably slower short MNIST runs, from the slow iterator
    teardown of its distributed datasets: see data._options).
    """
    import tensorflow as tf

    info = configure_devices(settings)
    kind = info["device_type"]
    devices = [d.name for d in tf.config.list_logical_devices(kind)]
    if len(devices) == 1:
        return tf.distribute.get_strategy()
    if kind == "CPU":
        # One replica per logical CPU device; reduce on the host (NCCL is GPU-only).
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    return tf.distribute.MirroredStrategy(devices)
