"""train() called directly: real TensorFlow on real MNIST slices, MirroredStrategy with 2 CPU replicas.

These run in a subprocess each, because the logical CPU devices must be configured before
TensorFlow's runtime starts, and pytest's own process may already have started it.
"""

import json
import textwrap

import numpy as np
import pytest

from tests.helpers import run_py

pytestmark = pytest.mark.slow


@pytest.fixture
def env(home):
    import os

    e = dict(os.environ)
    e.update(DIGITQ_CPU_REPLICAS="2", TF_CPP_MIN_LOG_LEVEL="2")
    return e


def test_two_replica_training_writes_model_history_and_tensorboard(env, home):
    out = run_py("""
        import json
        from digitq.common.schemas import TrainRequest
        from digitq.common.settings import load_settings
        from digitq.worker.train import train
        reports = []
        r = TrainRequest.from_dict({"epochs": 2, "train_size": 3000, "validation_size": 500, "test_size": 500,
                                    "batch_size": 32})
        res = train(r, "job-a", load_settings(), report=reports.append)
        d = res.to_dict()
        d["phases"] = sorted({m.get("phase") for m in reports})
        d["last"] = [m for m in reports if m.get("phase") == "train"][-1]

        # Keras' global state is freed after the result, by release_memory (the worker's task_postrun).
        import keras
        from digitq.worker import train as trainer
        d["waiting"] = bool(trainer._pending_release)
        d["names"] = [keras.layers.Dense(1).name]
        trainer.release_memory()
        d["names"].append(keras.layers.Dense(1).name)
        d["still_waiting"] = bool(trainer._pending_release)

        # The saved model takes raw pixels and reproduces the reported accuracy.
        from digitq.worker.data import load_mnist
        m = load_mnist(load_settings())
        model = keras.models.load_model(res.model_path)
        p = model.predict(m["test_images"][:500, :, :, None], verbose=0)
        d["reloaded_accuracy"] = float((p.argmax(1) == m["test_labels"][:500]).mean())
        print(json.dumps(d))
    """, env)
    assert out["replicas"] == 2 and out["devices"] == ["CPU x2"]
    assert out["epochs"] == 2 and len(out["history"]) == 2
    assert out["test_accuracy"] > 0.75  # 3,000 images, 2 epochs: far above chance (0.10)
    assert len(out["per_class_accuracy"]) == 10 and sum(map(sum, out["confusion"])) == 500
    assert {"loading data", "train", "evaluating"} <= set(out["phases"])
    last = out["last"]
    assert last["epoch"] == 2 and last["batch"] == last["batches"] == 47  # ceil(3000 / (32 x 2 replicas))
    for e in out["history"]:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_second"} <= set(e)
    job = home / "jobs" / "job-a"
    assert (job / "model.keras").is_file()
    assert json.loads((job / "history.json").read_text()) == out["history"]
    assert list((job / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert not (job / "backup").exists(), "the backups are deleted once model.keras is saved"

    assert out["reloaded_accuracy"] == pytest.approx(out["test_accuracy"], abs=1e-6)
    assert out["waiting"] and not out["still_waiting"]
    assert out["names"][1] == "dense"  # clear_session ran: Keras' layer names start again


def test_an_interrupted_job_resumes_from_its_backup(env, home):
    code = """
        import json
        from digitq.common.errors import JobCancelled
        from digitq.common.schemas import TrainRequest
        from digitq.common.settings import load_settings
        from digitq.worker.train import train
        from pathlib import Path
        hist = Path(load_settings().jobs_dir / "job-r" / "history.json")
        r = TrainRequest.from_dict({"epochs": 3, "train_size": 1000, "validation_size": 300, "test_size": 300})
        stop = (lambda: hist.exists() and len(json.loads(hist.read_text())) >= 1) if FIRST else None
        try:
            res = train(r, "job-r", load_settings(), should_stop=stop)
            print(json.dumps(res.to_dict()))
        except JobCancelled:
            print(json.dumps({"interrupted": json.loads(hist.read_text())}))
    """
    first = run_py("FIRST = True\n" + textwrap.dedent(code), env)
    assert len(first["interrupted"]) == 1
    assert (home / "jobs" / "job-r" / "backup").is_dir()
    second = run_py("FIRST = False\n" + textwrap.dedent(code), env)
    assert second["resumed"] is True and second["epochs"] == 3
    h = second["history"]
    assert [e["epoch"] for e in h] == [1, 2, 3]
    assert h[0] == first["interrupted"][0], "the epoch done before the interruption is not re-run"
    assert h[1].get("resumed") is True and "resumed" not in h[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir):
    """One process builds every architecture, then trains the default one under mixed precision
    (the global policy is set last, so it cannot change the architectures' checks)."""
    import os

    env = dict(os.environ, DIGITQ_HOME=str(tmp_path_factory.mktemp("built")), DIGITQ_DATA_DIR=str(data_dir),
               DIGITQ_CPU_REPLICAS="2", TF_CPP_MIN_LOG_LEVEL="2")
    return run_py("""
        import json, keras, numpy as np
        from digitq.common.schemas import TrainRequest
        from digitq.worker.model import build_model, compile_model, resolve_hparams
        res = {}
        for arch in ("fast-cnn", "cnn", "seed-cnn", "mlp"):
            m = build_model(resolve_hparams(TrainRequest(arch=arch)))
            p = m.predict(np.zeros((2, 28, 28, 1), np.uint8), verbose=0)
            res[arch] = {"shape": list(p.shape), "sum": float(p.sum()), "params": m.count_params(),
                         "layers": [l.__class__.__name__ for l in m.layers]}
        seed = build_model(resolve_hparams(TrainRequest(arch="seed-cnn")))
        res["seed"] = [(l.name, getattr(l, "filters", None), getattr(l, "kernel_size", None), getattr(l, "units", None),
                        getattr(l, "rate", None)) for l in seed.layers]

        keras.mixed_precision.set_global_policy("mixed_float16")
        hp = resolve_hparams(TrainRequest())
        m = build_model(hp)
        compile_model(m, hp, 10)
        x = np.random.default_rng(0).integers(0, 255, (64, 28, 28, 1)).astype("uint8")
        y = keras.utils.to_categorical(np.arange(64) % 10, 10)
        h = m.fit(x, y, epochs=2, batch_size=32, verbose=0)
        res["mixed"] = {"out": str(m.output.dtype), "conv": str(next(l for l in m.layers if isinstance(l, keras.layers.Conv2D)).compute_dtype),
                        "opt": m.optimizer.__class__.__name__, "loss": h.history["loss"]}
        print(json.dumps(res))
    """, env)


def test_every_architecture_builds_and_takes_raw_pixels(built):
    out = built
    for arch in ("fast-cnn", "cnn", "seed-cnn", "mlp"):
        assert out[arch]["shape"] == [2, 10] and out[arch]["sum"] == pytest.approx(2.0, abs=1e-4)
    seed = {name: rest for name, *rest in out["seed"]}
    assert seed["conv1"][:2] == [32, [5, 5]] and seed["conv2"][:2] == [64, [5, 5]]
    assert seed["fc1"][2] == 1024 and seed["dropout"][3] == 0.5
    # 5x5x1x32+32 + 5x5x32x64+64 + 3136x1024+1024 + 1024x10+10 (normalisation is fixed, not weights)
    assert out["seed-cnn"]["params"] == 832 + 51264 + 3212288 + 10250


def test_mixed_precision_trains_on_cpu_with_float32_outputs(built):
    out = built["mixed"]
    assert out["out"] == "float32" and out["conv"] == "float16"
    assert out["opt"] == "LossScaleOptimizer" and all(np.isfinite(out["loss"]))
