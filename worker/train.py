"""Train one model (or an ensemble) for one TrainRequest: data, strategy, fit with backups,
evaluate, save.

    result = train(request, job_id, settings)      # plain function; the Celery task wraps it

Batch size is per replica: the global batch is batch_size x replicas (with 2 or more devices,
MirroredStrategy splits each global batch across the replicas and all-reduces the gradients).

Backups (digitq.worker.backup) are whole generations written atomically at every epoch end,
every `--save-every` batches, and when the worker is asked to stop (digitq.worker.shutdown: the
job then raises JobHandedBack and goes back to the queue). A redelivered job resumes from the
newest usable one, mid-epoch if it was taken mid-epoch: the rest of that epoch runs as a `fit`
of its own, then the remaining epochs.

An ensemble trains its K members one after another, each in `member-<k>/` with its own
backups, so a redelivered job skips the members already done; their test probabilities are
averaged.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from digitq.common.schemas import TrainRequest, TrainResult
from digitq.common.settings import Settings
from digitq.worker import data, job_folder, shutdown
from digitq.worker.backup import BackupStore
from digitq.worker.devices import configure_devices, make_strategy
from digitq.worker.scoring import score_predictions

log = logging.getLogger("digitq.worker.train")

PREDICT_BATCH = 1024
"""Images per replica per step when evaluating."""


def _pixel_stats(x: np.ndarray, standardize: bool) -> tuple[float, float]:
    """Mean and std of the training pixels on the [0, 1] scale (0 and 1 when not standardising)."""
    if not standardize or x.size == 0:
        return 0.0, 1.0
    sample = x[:: max(1, len(x) // 10000)].astype(np.float32) / 255.0  # 10k images are plenty
    return float(sample.mean()), float(max(sample.std(), 1e-3))


def accelerator_options(request: TrainRequest, device_type: str) -> tuple[str, bool, list[str]]:
    """(dtype policy, jit, warnings): mixed precision and XLA apply on GPUs only."""
    warnings = []
    policy, jit = "float32", request.jit
    if request.precision == "mixed":
        if device_type == "GPU":
            policy = "mixed_float16"  # Keras wraps the optimizer in a LossScaleOptimizer
        else:
            warnings.append("--precision mixed ignored: no GPU (float16 is slower than float32 on CPUs)")
    if request.jit and device_type != "GPU":
        jit = False
        warnings.append("--jit ignored: no GPU (XLA made CPU training slower in our measurements)")
    return policy, jit, warnings


@dataclasses.dataclass
class _Member:
    """One trained model: where it is, its history and its test probabilities."""

    folder: Path
    history: list
    probs: np.ndarray | None
    resumed: bool


def fit_phases(epoch: int, batch: int, epochs: int, steps_per_epoch: int) -> list[tuple[int, int, int]]:
    """The `fit` calls that finish training from `epoch` epochs and `batch` batches done:
    (initial_epoch, batches already done in it, steps per epoch of this fit). A mid-epoch resume
    runs the rest of its epoch alone, then the remaining epochs."""
    phases = []
    if batch:
        phases.append((epoch, batch, steps_per_epoch - batch))
        epoch += 1
    if epoch < epochs:
        phases.append((epoch, 0, steps_per_epoch))
    return phases


def _fit_one(request: TrainRequest, folder: Path, ds: data.Dataset, settings: Settings, report, should_stop,
             label: str, commit: Callable[[], None] | None = None, extra_callbacks: list | None = None) -> _Member:
    import keras

    from digitq.worker import callbacks as cb
    from digitq.worker.augment import make_augmenter
    from digitq.worker.model import build_model, compile_model, keep_average, resolve_hparams

    release_memory()  # what an earlier member or job left, before this one builds its model
    hp = resolve_hparams(request)
    info = configure_devices(settings)
    strategy = make_strategy(settings)
    replicas = strategy.num_replicas_in_sync
    global_batch = hp.batch_size * replicas
    steps_per_epoch = math.ceil(len(ds.train) / global_batch)
    mean, std = _pixel_stats(ds.train.x, request.standardize)
    policy, jit, warnings = accelerator_options(request, info["device_type"])
    for w in warnings:
        log.warning(w)

    folder.mkdir(parents=True, exist_ok=True)
    store = BackupStore(folder / "backup", guard=None if commit is None else (lambda: commit() or True))  # raises LeaseLost
    log.info("%s: %s on %d %s images (%d validation), %d epoch(s), %d replica(s) on %s, global batch %d%s%s",
             label, hp.arch, len(ds.train), ds.name, len(ds.val), request.epochs, replicas,
             ", ".join(info["gpus"]) or "CPU", global_batch, f", augment {hp.augment}" if hp.augment != "none" else "",
             ", a backup exists" if store.exists() else "")
    keras.utils.set_random_seed(request.seed)
    keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            model = build_model(hp, mean, std, replicas)
            compile_model(model, hp, steps_per_epoch * request.epochs, jit=jit)
            resume = store.restore(model, steps_per_epoch, request.epochs)
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the next job starts clean
    resumed = resume.source is not None
    if resumed:
        log.info("%s: resuming from backup %s at epoch %d batch %d of %d", label, resume.source.name,
                 resume.epoch + 1, resume.batch, steps_per_epoch)

    augment = make_augmenter(hp.augment, request.seed)
    train_ds = data.make_tf_dataset(ds.train, global_batch, shuffle=request.shuffle, seed=request.seed,
                                    augment=augment, repeat=True)
    val_ds = data.make_tf_dataset(ds.val, global_batch) if len(ds.val) else None
    has_test = ds.test is not None and len(ds.test) > 0
    test_images = data.make_images_dataset(ds.test.x[..., None], PREDICT_BATCH * replicas) if has_test else None
    track = (test_images, ds.test.y) if request.track_test and has_test else None
    history_cb = cb.HistoryCallback(folder / "history.json", len(ds.train), test=track, start_epoch=resume.epoch,
                                    resumed=resumed, steps_per_epoch=steps_per_epoch, commit=commit)
    callbacks = [cb.CancelCallback(should_stop)] if should_stop is not None else []  # first: a lost lease stops
    callbacks += [cb.EmaValidation()] if hp.ema else []
    callbacks += [  # the job before any other callback writes
        history_cb,  # before the backup: an epoch's entry is written before a backup counts it done
        cb.BackupCallback(store, steps_per_epoch, every=request.save_every_batches, hand_back=shutdown.requested),
        cb.EpochTensorBoard(str(folder / "tensorboard")),
        cb.ProgressCallback(report, request.epochs, steps_per_epoch, global_batch),
    ]
    callbacks += extra_callbacks or []  # e.g. a sweep trial's pruning (digitq.worker.sweep)
    try:
        for first, offset, steps in fit_phases(resume.epoch, resume.batch, request.epochs, steps_per_epoch):
            for c in callbacks:
                if hasattr(c, "batch_offset"):
                    c.batch_offset = offset
            model.fit(train_ds, validation_data=val_ds, initial_epoch=first, epochs=first + 1 if offset else
                      request.epochs, steps_per_epoch=steps, callbacks=callbacks, shuffle=False,
                      verbose=0)  # the tf.data pipeline shuffles (seeded)
        keep_average(model)  # the moving average of the weights, where the recipe keeps one, is the model
        report({"phase": "evaluating"})
        probs = None
        if has_test:
            log.info("%s: evaluating on %d test images", label, len(ds.test))
            probs = model.predict(test_images, verbose=0)
            partial = job_folder.temp_name(folder / "test_probs.npy")
            np.save(partial, probs.astype(np.float32))
            job_folder.commit_file(partial, folder / "test_probs.npy", commit)  # before model.keras marks it done
        # The saved model is for inference: uncompiled, so plain Keras loads it without digitq's
        # learning-rate schedule class (resuming uses backup/, not this file).
        partial = job_folder.temp_name(folder / "model.keras")
        keras.Model(model.inputs, model.outputs, name=model.name).save(partial)
        job_folder.commit_file(partial, folder / "model.keras", commit)
        store.clear()  # after model.keras: a kill before this resumes from the last backup
    finally:
        del model
        _pending_release.append(True)  # freed by release_memory, after the result is stored
    return _Member(folder, history_cb.entries, probs, resumed)


_pending_release: list = []
"""Non-empty while a finished model's memory waits for `release_memory`."""


def memory_waiting() -> bool:
    """Whether a finished model's memory waits for `release_memory`."""
    return bool(_pending_release)


def release_memory() -> None:
    """Free what the last trained model left: Keras' global state (clear_session) and reference
    cycles (gc). The worker calls it once a job's result is stored and its message acked (from
    Celery's task_postrun, on the event loop's next turn), so the client does not wait for it
    (BENCHMARKS.md, overhead); the next model built calls it first anyway. A no-op when nothing waits."""
    if not _pending_release:
        return
    import keras

    _pending_release.clear()
    keras.backend.clear_session()
    gc.collect()


def _load_member(folder: Path) -> _Member | None:
    """A member an earlier delivery already finished (its model and test probabilities saved)."""
    if not (folder / "model.keras").exists():
        return None
    probs_path = folder / "test_probs.npy"
    probs = np.load(probs_path) if probs_path.exists() else None
    return _Member(folder, job_folder.read_json(folder / "history.json", []), probs, True)


def train(
    request: TrainRequest,
    job_id: str,
    settings: Settings,
    report: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    commit: Callable[[], None] | None = None,
    callbacks: list | None = None,
) -> TrainResult:
    """Train, evaluate on the test set, save `model.keras` (or K members), and return the result.

    Resumes from `backup/` when an earlier delivery of the same job left a usable one.
    `should_stop` is called about once a second (True: cancelled; it may raise LeaseLost);
    `commit` right before each backup and each finished file is put in place (the job lease's
    fence check; it raises LeaseLost). Raises JobHandedBack, after a backup, once the worker is
    asked to stop (digitq.worker.shutdown). `callbacks`: more Keras callbacks for fit (a sweep
    trial's pruning).
    """
    started = time.time()
    report = report or (lambda meta: None)
    folder = job_folder.job_dir(settings, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    job_folder.write_json(folder / "request.json", request.to_dict())

    report({"phase": "loading data"})
    ds = data.load_dataset(settings, request.dataset, request.validation_size, request.train_size,
                           request.test_size, request.seed)
    info = configure_devices(settings)
    k_total = request.ensemble
    members = []
    for k in range(k_total):
        if k_total == 1:
            member_req, member_folder, label, member_report = request, folder, f"job {job_id}", report
        else:
            member_req = dataclasses.replace(request, seed=request.seed + k, ensemble=1)
            member_folder = folder / f"member-{k}"
            label = f"job {job_id} model {k + 1}/{k_total}"
            member_report = (lambda meta, k=k: report({**meta, "member": k + 1, "members": k_total}))
            done = _load_member(member_folder)
            if done is not None:
                log.info("%s: already trained by an earlier delivery", label)
                members.append(done)
                continue
        members.append(_fit_one(member_req, member_folder, ds, settings, member_report, should_stop, label,
                                commit, callbacks))

    if ds.test is not None and len(ds.test) and all(m.probs is not None for m in members):
        probs = np.mean([m.probs for m in members], axis=0)
        scores = score_predictions(probs, ds.test.y)
        member_acc = [score_predictions(m.probs, ds.test.y)["accuracy"] for m in members]
    else:
        scores = {"accuracy": float("nan"), "loss": float("nan"), "per_class_accuracy": [], "confusion": []}
        member_acc = []
    log.info("job %s: test accuracy %.4f, loss %.4f, %.1f s", job_id, scores["accuracy"], scores["loss"],
             time.time() - started)
    history = members[0].history if k_total == 1 else [
        {**e, "member": i + 1} for i, m in enumerate(members) for e in m.history]
    paths = [str(m.folder / "model.keras") for m in members]
    replicas = info["replicas"]
    return TrainResult(
        job_id=job_id,
        state="SUCCESS",
        test_accuracy=scores["accuracy"],
        test_loss=scores["loss"],
        per_class_accuracy=scores["per_class_accuracy"],
        confusion=scores["confusion"],
        epochs=len(members[0].history),
        wall_seconds=round(time.time() - started, 3),
        train_seconds=round(sum(e["seconds"] for m in members for e in m.history), 3),
        model="",
        arch=request.arch,
        model_path=paths[0] if k_total == 1 else str(folder),
        history=history,
        replicas=replicas,
        devices=info["gpus"] or [f"CPU x{replicas}"],
        train_images=len(ds.train),
        dataset=ds.name,
        resumed=any(m.resumed for m in members),
        members=paths if k_total > 1 else [],
        member_accuracies=member_acc if k_total > 1 else [],
        warnings=accelerator_options(request, info["device_type"])[2],
    )
