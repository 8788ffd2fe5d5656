"""Train one model for one TrainRequest: data, strategy, fit with backups, evaluate, save.

    result = train(request, job_id, settings)      # plain function; the Celery task wraps it

Batch size is per replica: the global batch is batch_size x replicas (MirroredStrategy splits
each global batch across the replicas and all-reduces the gradients).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import time
from typing import Callable

import numpy as np

from digitq.common.schemas import TrainRequest, TrainResult
from digitq.common.settings import Settings
from digitq.worker import checkpoints, data
from digitq.worker.devices import configure_devices, make_strategy
from digitq.worker.metrics import score_predictions

log = logging.getLogger("digitq.worker.train")

PREDICT_BATCH = 1024
"""Images per replica per step when evaluating."""


def _pixel_stats(x: np.ndarray, standardize: bool) -> tuple[float, float]:
    """Mean and std of the training pixels on the [0, 1] scale (0 and 1 when not standardising)."""
    if not standardize or x.size == 0:
        return 0.0, 1.0
    sample = x[:: max(1, len(x) // 10000)].astype(np.float32) / 255.0  # 10k images are plenty
    return float(sample.mean()), float(max(sample.std(), 1e-3))


def train(
    request: TrainRequest,
    job_id: str,
    settings: Settings,
    report: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train, evaluate on the test set, save `model.keras`, and return the result.

    Resumes from `backup/` when an earlier delivery of the same job left one.
    """
    import keras

    from digitq.worker import callbacks as cb
    from digitq.worker.model import build_model, compile_model, resolve_hparams

    started = time.time()
    report = report or (lambda meta: None)
    folder = checkpoints.job_dir(settings, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoints.write_json(folder / "request.json", request.to_dict())
    hp = resolve_hparams(request)

    report({"phase": "loading data"})
    ds = data.load_dataset(settings, request.dataset, request.validation_size, request.train_size,
                           request.test_size, request.seed)
    info = configure_devices(settings)
    strategy = make_strategy(settings)
    replicas = strategy.num_replicas_in_sync
    global_batch = hp.batch_size * replicas
    steps_per_epoch = math.ceil(len(ds.train) / global_batch)
    mean, std = _pixel_stats(ds.train.x, request.standardize)

    keras.utils.set_random_seed(request.seed)
    with strategy.scope():
        model = build_model(hp, mean, std, replicas)
        compile_model(model, hp, steps_per_epoch * request.epochs, jit=request.jit)

    train_ds = data.make_tf_dataset(ds.train, global_batch, shuffle=request.shuffle, seed=request.seed)
    val_ds = data.make_tf_dataset(ds.val, global_batch) if len(ds.val) else None
    backup_dir = folder / "backup"
    resumed = (backup_dir / "training_metadata.json").exists()
    log.info("job %s: %s on %d %s images (%d validation), %d epoch(s), %d replica(s) on %s, global batch %d%s",
             job_id, hp.arch, len(ds.train), ds.name, len(ds.val), request.epochs, replicas,
             ", ".join(info["gpus"]) or "CPU", global_batch, ", resuming from backup" if resumed else "")
    callbacks = [
        cb.EpochAndBatchBackup(str(backup_dir), save_freq=request.save_every_batches or "epoch"),
        cb.HistoryCallback(folder / "history.json", len(ds.train)),
        keras.callbacks.TensorBoard(str(folder / "tensorboard"), write_graph=False, profile_batch=0),
        cb.ProgressCallback(report, request.epochs, steps_per_epoch, global_batch),
    ]
    if should_stop is not None:
        callbacks.append(cb.CancelCallback(should_stop))
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=request.epochs, callbacks=callbacks,
                  shuffle=False, verbose=0)  # the tf.data pipeline shuffles (seeded)
        history = callbacks[1].entries

        report({"phase": "evaluating"})
        log.info("job %s: evaluating on %d test images", job_id, len(ds.test) if ds.test is not None else 0)
        if ds.test is not None and len(ds.test):
            probs = model.predict(ds.test.x[..., None], batch_size=PREDICT_BATCH * replicas, verbose=0)
            scores = score_predictions(probs, ds.test.y)
        else:
            scores = {"accuracy": float("nan"), "loss": float("nan"), "per_class_accuracy": [], "confusion": []}

        model_path = folder / "model.keras"
        partial = folder / ".partial.keras"
        # The saved model is for inference: uncompiled, so plain Keras loads it without digitq's
        # learning-rate schedule class (resuming uses backup/, not this file).
        keras.Model(model.inputs, model.outputs, name=model.name).save(partial)
        os.replace(partial, model_path)
    finally:
        del model
        keras.backend.clear_session()
        gc.collect()

    log.info("job %s: test accuracy %.4f, loss %.4f, %.1f s", job_id, scores["accuracy"], scores["loss"],
             time.time() - started)
    result = TrainResult(
        job_id=job_id,
        state="SUCCESS",
        test_accuracy=scores["accuracy"],
        test_loss=scores["loss"],
        per_class_accuracy=scores["per_class_accuracy"],
        confusion=scores["confusion"],
        epochs=len(history),
        wall_seconds=round(time.time() - started, 3),
        train_seconds=round(sum(e["seconds"] for e in history), 3),
        model="",
        arch=request.arch,
        model_path=str(model_path),
        history=history,
        replicas=replicas,
        devices=info["gpus"] or [f"CPU x{replicas}"],
        train_images=len(ds.train),
        dataset=ds.name,
        resumed=resumed,
    )
    return result
