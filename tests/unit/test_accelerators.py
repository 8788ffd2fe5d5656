from digitq.common.schemas import TrainRequest
from digitq.worker.train import accelerator_options


def test_mixed_precision_and_xla_apply_on_gpus_and_warn_on_cpus():
    r = TrainRequest(precision="mixed", jit=True)
    assert accelerator_options(r, "GPU") == ("mixed_float16", True, [])
    policy, jit, warnings = accelerator_options(r, "CPU")
    assert (policy, jit) == ("float32", False) and len(warnings) == 2
    assert all("ignored: no GPU" in w for w in warnings)
    assert accelerator_options(TrainRequest(), "CPU") == ("float32", False, [])
