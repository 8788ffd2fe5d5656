#!/usr/bin/env python3
"""Bare Keras training of a digitq architecture: the competitor of `digitq submit-train` in
bench/suite.py.

It trains the same model with the same recipe on the same MNIST split as a digitq job would
(`build_model` and `compile_model` from digitq.worker.model, `make_augmenter` from
digitq.worker.augment, `load_dataset` and `make_tf_dataset` from digitq.worker.data; the same
pixel statistics, seed, batch, schedule length, validation set and test evaluation), but in a plain script: no queue, no Celery, no
backups, TensorBoard, progress reports or history file. Only a tiny epoch timer is attached
(and with --steady, a batch timer), so its per-epoch seconds mean what the service's do.

    python bench/bare_keras.py --epochs 2                             # like `submit-train --epochs 2`
    DIGITQ_CPU_REPLICAS=2 python bench/bare_keras.py --strategy mirrored --epochs 1 \\
        --train-size 20000 --validation-size 0 --test-size 1000 --steady   # scaling

It prints one JSON object (last line of stdout; also --out): the phases' seconds
(import, data, setup = build + compile + input pipelines, fit, eval, save), the per-epoch
history, test accuracy, and the versions of TensorFlow and Keras. The service's `wall_seconds`
is compared with `timed_seconds` = fit + eval + save.

It uses the worker's CPU kernels (TensorFlow's oneDNN, `devices.prefer_onednn`), so that a
comparison with the service measures the service, not a kernel choice; TF_ENABLE_ONEDNN_OPTS=0
or =1 in its environment overrides that (the suite's `onednn` benchmark).

--strategy none (default) is what a user's script does: no tf.distribute. --strategy mirrored
uses digitq's own device set-up (DIGITQ_CPU_REPLICAS logical CPU devices) and strategy, as the
worker does: MirroredStrategy with 2 or more devices, TensorFlow's default strategy with one.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # as early as possible: the interpreter's own start-up is measured outside

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=None, help="one of digitq's architectures (default: the default job's)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None, help="per replica (default: the architecture's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation-size", type=int, default=5000)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--strategy", choices=("none", "mirrored"), default="none",
                   help="none: plain Keras; mirrored: digitq's strategy over DIGITQ_CPU_REPLICAS devices (as the worker)")
    p.add_argument("--steady", action="store_true",
                   help="also time the first epoch's batches after a warm-up (steady-state images/s); adds a "
                        "per-batch callback, so leave it off when comparing with the service")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from digitq.common.schemas import TrainRequest
    from digitq.common.settings import load_settings

    settings = load_settings()  # DIGITQ_DATA_DIR, DIGITQ_CPU_REPLICAS
    t = time.perf_counter()
    from digitq.worker.devices import prefer_onednn

    prefer_onednn()  # before TensorFlow starts: the same CPU kernels as the worker
    import keras
    import numpy as np
    import tensorflow as tf

    from digitq.worker import data
    from digitq.worker.devices import configure_devices, make_strategy, onednn_enabled
    from digitq.worker.augment import make_augmenter
    from digitq.worker.model import build_model, compile_model, keep_average, resolve_hparams
    from digitq.worker.train import PREDICT_BATCH, _pixel_stats

    phases = {"import": time.perf_counter() - t}

    request = TrainRequest.from_dict(dict(
        arch=args.arch or TrainRequest().arch, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        validation_size=args.validation_size, train_size=args.train_size, test_size=args.test_size))

    t = time.perf_counter()
    ds = data.load_dataset(settings, "mnist", request.validation_size, request.train_size, request.test_size,
                           request.seed)
    phases["data"] = time.perf_counter() - t

    t = time.perf_counter()
    hp = resolve_hparams(request)
    if args.strategy == "mirrored":
        info = configure_devices(settings)
        strategy = make_strategy(settings)
        replicas = strategy.num_replicas_in_sync
        scope = strategy.scope()
    else:
        import contextlib

        info = {"device_type": "CPU", "replicas": 1}
        replicas = 1
        scope = contextlib.nullcontext()
    global_batch = hp.batch_size * replicas
    steps_per_epoch = math.ceil(len(ds.train) / global_batch)
    mean, std = _pixel_stats(ds.train.x, request.standardize)
    keras.utils.set_random_seed(request.seed)
    with scope:
        model = build_model(hp, mean, std, replicas)
        compile_model(model, hp, steps_per_epoch * request.epochs)
    augment = make_augmenter(hp.augment, request.seed)
    train_ds = data.make_tf_dataset(ds.train, global_batch, shuffle=request.shuffle, seed=request.seed,
                                    augment=augment)
    val_ds = data.make_tf_dataset(ds.val, global_batch) if len(ds.val) else None
    phases["setup"] = time.perf_counter() - t

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.entries = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.monotonic() - self._t
            entry = {"epoch": epoch + 1, "seconds": round(seconds, 3),
                     "images_per_second": round(len(ds.train) / seconds, 1) if seconds > 0 else None}
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                if logs and key in logs:
                    entry[key] = float(logs[key])
            self.entries.append(entry)

    class SteadyTimer(keras.callbacks.Callback):
        """Times the first epoch's batches after `warm` batches (tracing and pipeline start-up excluded)."""

        def __init__(self, warm: int):
            super().__init__()
            self.warm = warm
            self.t_warm = self.t_last = None
            self.last_batch = -1
            self._epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self._epoch != 0:
                return
            now = time.monotonic()
            if batch == self.warm - 1:
                self.t_warm = now
            self.t_last, self.last_batch = now, batch

        def rate(self):
            if self.t_warm is None or self.last_batch < self.warm or self.t_last <= self.t_warm:
                return None
            images = min(len(ds.train), (self.last_batch + 1) * global_batch) - self.warm * global_batch
            return images / (self.t_last - self.t_warm)

    timer = EpochTimer()
    callbacks = [timer]
    if hp.ema:  # validation scores the weights' moving average, as the service's does (Keras' own callback)
        callbacks.append(keras.callbacks.SwapEMAWeights())
    steady = None
    if args.steady:
        steady = SteadyTimer(warm=max(1, min(10, steps_per_epoch // 4)))
        callbacks.append(steady)

    t_timed = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=request.epochs, callbacks=callbacks, shuffle=False, verbose=0)
    keep_average(model)  # the weights' moving average, where the recipe keeps one, is the model
    phases["fit"] = time.perf_counter() - t_timed

    t = time.perf_counter()
    test_accuracy = None
    if ds.test is not None and len(ds.test):
        probs = model.predict(ds.test.x[..., None], batch_size=PREDICT_BATCH * replicas, verbose=0)
        test_accuracy = float((probs.argmax(axis=1) == ds.test.y).mean())
    phases["eval"] = time.perf_counter() - t

    t = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="digitq-bare-"))
    try:
        keras.Model(model.inputs, model.outputs, name=model.name).save(folder / "model.keras")
        model_bytes = (folder / "model.keras").stat().st_size
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    phases["save"] = time.perf_counter() - t
    timed = time.perf_counter() - t_timed

    out = {
        "arch": hp.arch, "epochs": request.epochs, "train_images": len(ds.train), "validation_images": len(ds.val),
        "test_images": len(ds.test) if ds.test is not None else 0, "batch_size_per_replica": hp.batch_size,
        "global_batch": global_batch, "replicas": replicas, "strategy": args.strategy,
        "device_type": info.get("device_type"), "onednn": onednn_enabled(),
        "phases_seconds": {k: round(v, 4) for k, v in phases.items()},
        "timed_seconds": round(timed, 4),  # fit + eval + save, like the service's wall_seconds
        "train_seconds": round(sum(e["seconds"] for e in timer.entries), 3),  # sum of epochs, like the service's
        "history": timer.entries,
        "steady_images_per_second": round(steady.rate(), 1) if steady and steady.rate() else None,
        "test_accuracy": test_accuracy,
        "model_bytes": model_bytes,
        "internal_seconds": round(time.perf_counter() - T_START, 4),  # from this module's first line to here
        "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    text = json.dumps(out)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
