"""Keras callbacks that connect a training run to the service: live progress, a persisted
per-epoch history that survives redelivery, cancellation, and backups for resuming."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import keras

from digitq.common.errors import JobCancelled
from digitq.worker import prometheus
from digitq.worker.compat import initial_epoch, save_backup
from digitq.worker.job_folder import read_json, write_json

log = logging.getLogger("digitq.worker.train")

PROGRESS_INTERVAL = 0.5
"""Seconds between two progress reports (each is a write to the result backend)."""

CANCEL_CHECK_INTERVAL = 1.0
"""Seconds between two looks at the job's cancel flag in Redis."""


class ProgressCallback(keras.callbacks.Callback):
    """Reports epoch, batch, loss, accuracy and ETA through `report(dict)`, at most every 0.5 s."""

    def __init__(self, report: Callable[[dict], None], epochs: int, steps_per_epoch: int, images_per_step: int):
        super().__init__()
        self._report = report
        self.epochs = epochs
        self.steps = steps_per_epoch
        self.images_per_step = images_per_step
        self._last = 0.0

    def on_train_begin(self, logs=None):
        self._t0 = time.monotonic()
        self._first_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._epoch = epoch

    def _meta(self, batch: int, logs: dict) -> dict:
        elapsed = time.monotonic() - self._t0
        done = (self._epoch - self._first_epoch) * self.steps + batch
        total = (self.epochs - self._first_epoch) * self.steps
        meta = {
            "phase": "train",
            "epoch": self._epoch + 1,
            "epochs": self.epochs,
            "batch": batch,
            "batches": self.steps,
            "elapsed": round(elapsed, 2),
            "eta": round(elapsed / done * (total - done), 1) if done else None,
            "images_per_second": round(done * self.images_per_step / elapsed, 1) if elapsed > 0 else None,
        }
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if logs and key in logs:
                meta[key] = round(float(logs[key]), 5)
        return meta

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL:
            self._last = now
            self._report(self._meta(batch + 1, logs))

    def on_epoch_end(self, epoch, logs=None):
        self._last = time.monotonic()
        self._report(self._meta(self.steps, logs))


class CancelCallback(keras.callbacks.Callback):
    """Stops training at once (raises JobCancelled) when `should_stop()` turns true; `should_stop`
    may raise itself (LeaseLost). Checked about once a second and at every epoch end: put it
    first in the callbacks, so a worker woken after losing its lease stops before the backup
    and history callbacks write."""

    def __init__(self, should_stop: Callable[[], bool]):
        super().__init__()
        self._should_stop = should_stop
        self._last = 0.0

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self._last >= CANCEL_CHECK_INTERVAL:
            self._last = now
            if self._should_stop():
                raise JobCancelled("job cancelled")

    def on_epoch_end(self, epoch, logs=None):
        self._last = time.monotonic()
        if self._should_stop():
            raise JobCancelled("job cancelled")


class HistoryCallback(keras.callbacks.Callback):
    """Appends one entry per epoch to history.json (atomically), keeping the entries of earlier
    deliveries of the same job; the first epoch after a resume is marked `"resumed": true`.

    With `test` (a tf.data dataset of batched test images, their labels), each entry also gets
    the test accuracy after that epoch and `train_elapsed`, the training seconds so far (the
    test pass itself not counted)."""

    def __init__(self, path: Path, train_images: int, test=None, commit: Callable[[], None] | None = None):
        super().__init__()
        self.path = path
        self.commit = commit  # the job lease's fence check before each write
        self.train_images = train_images
        self.test = test
        self.entries: list = []

    def on_train_begin(self, logs=None):
        start = initial_epoch(self.model)
        self.entries = (read_json(self.path, []) or [])[:start]
        self._resumed = start > 0

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self._t
        entry = {"epoch": epoch + 1}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if logs and key in logs:
                entry[key] = float(logs[key])
        entry["seconds"] = round(seconds, 3)
        entry["images_per_second"] = round(self.train_images / seconds, 1) if seconds > 0 else None
        if self._resumed:
            entry["resumed"] = True
            self._resumed = False
        entry["train_elapsed"] = round(sum(e["seconds"] for e in self.entries) + seconds, 3)
        if self.test is not None:
            x, y = self.test
            probs = self.model.predict(x, verbose=0)
            entry["test_accuracy"] = float((probs.argmax(axis=1) == y).mean())
        self.entries.append(entry)
        write_json(self.path, self.entries, commit=self.commit)
        prometheus.epoch_ended(seconds, entry["images_per_second"])
        log.info("epoch %d: loss %.4f accuracy %.4f val_loss %.4f val_accuracy %.4f, %.1f s, %s images/s%s",
                 epoch + 1, entry.get("loss", float("nan")), entry.get("accuracy", float("nan")),
                 entry.get("val_loss", float("nan")), entry.get("val_accuracy", float("nan")), seconds,
                 entry["images_per_second"], " (resumed)" if entry.get("resumed") else "")


class EpochAndBatchBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that saves at every epoch end as well as every `save_freq` batches
    (Keras saves only one or the other)."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            save_backup(self)
