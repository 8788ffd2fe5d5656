"""Keras callbacks that connect a training run to the service: live progress, a persisted
per-epoch history that survives redelivery, cancellation, backups for resuming, and the hand-back
of a job when its worker is asked to stop.

A resumed job may start mid-epoch: digitq.worker.train then runs the rest of that epoch as a
`fit` of its own before the remaining epochs, and sets `batch_offset` (batches of the epoch
done before this `fit`) on the callbacks that count batches.

No callback here makes Keras wait for a batch's results: Keras 3 runs the `on_train_batch_end`
hooks of callbacks marked `async_safe` on a thread, while the next step runs, and waits for
every step if any other callback has such a hook (converting each step's loss to a Python float
first). Progress is the only one that needs the losses, and it is async-safe; cancellation and
backups look between steps (`on_train_batch_begin`, which Keras calls without waiting), and
TensorBoard writes per epoch (`EpochTensorBoard`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import keras

from digitq.common.errors import JobCancelled, JobHandedBack
from digitq.worker import compat, prometheus
from digitq.worker.backup import BackupStore
from digitq.worker.job_folder import read_json, write_json
from digitq.worker.model import ema_weights, uses_ema

log = logging.getLogger("digitq.worker.train")

PROGRESS_INTERVAL = 0.5
"""Seconds between two progress reports (each is a write to the result backend)."""

CANCEL_CHECK_INTERVAL = 1.0
"""Seconds between two looks at the job's cancel flag in Redis."""


class EmaValidation(keras.callbacks.Callback):
    """Validation inside `fit` scores the moving average of the weights, like the saved model."""

    def on_test_begin(self, logs=None):
        self._swapped = uses_ema(self.model)  # built: fit has taken a step
        if self._swapped:
            compat.swap_ema_weights(self.model)

    def on_test_end(self, logs=None):
        if getattr(self, "_swapped", False):
            compat.swap_ema_weights(self.model)
            self._swapped = False


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback writing per epoch only, without its per-batch hook: with
    update_freq="epoch" that hook wrote nowhere, but made Keras wait for every step."""

    async_safe = True

    def __init__(self, log_dir: str):
        super().__init__(log_dir, write_graph=False, profile_batch=0, update_freq="epoch")

    def on_train_batch_end(self, batch, logs=None):
        pass


class ProgressCallback(keras.callbacks.Callback):
    """Reports epoch, batch, loss, accuracy and ETA through `report(dict)`, at most every 0.5 s.
    Async-safe: Keras runs its batch hook on a thread, in order, and waits for it at epoch end."""

    async_safe = True

    def __init__(self, report: Callable[[dict], None], epochs: int, steps_per_epoch: int, images_per_step: int):
        super().__init__()
        self._report = report
        self.epochs = epochs
        self.steps = steps_per_epoch
        self.images_per_step = images_per_step
        self.batch_offset = 0
        self._last = 0.0
        self._t0 = None
        self._first = None  # (epoch, batch) this delivery started from

    def on_train_begin(self, logs=None):
        if self._t0 is None:  # once per delivery, not once per fit
            self._t0 = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        if self._first is None:
            self._first = epoch * self.steps + self.batch_offset
        self._epoch = epoch

    def _meta(self, batch: int, logs: dict) -> dict:
        elapsed = time.monotonic() - self._t0
        batch += self.batch_offset if batch < self.steps else 0
        done = self._epoch * self.steps + batch - self._first
        total = self.epochs * self.steps - self._first
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
        self.batch_offset = 0


class CancelCallback(keras.callbacks.Callback):
    """Stops training at once (raises JobCancelled) when `should_stop()` turns true; `should_stop`
    may raise itself (LeaseLost). Checked about once a second, between steps, and at every epoch
    end: put it first in the callbacks, so a worker woken after losing its lease stops before the
    backup and history callbacks write."""

    def __init__(self, should_stop: Callable[[], bool]):
        super().__init__()
        self._should_stop = should_stop
        self._last = 0.0

    def on_train_batch_begin(self, batch, logs=None):
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
    deliveries for the `start_epoch` epochs the backup resumed from (later ones, written after
    that backup, are dropped); the first epoch after a resume is marked `"resumed": true`.

    With `test` (a tf.data dataset of batched test images, their labels), each entry also gets
    the test accuracy after that epoch and `train_elapsed`, the training seconds so far (the
    test pass itself not counted)."""

    def __init__(self, path: Path, train_images: int, test=None, start_epoch: int = 0, resumed: bool = False,
                 steps_per_epoch: int = 1, commit: Callable[[], None] | None = None):
        super().__init__()
        self.path = path
        self.commit = commit  # the job lease's fence check before each write
        self.train_images = train_images
        self.test = test
        self.steps = steps_per_epoch
        self.batch_offset = 0
        self.entries: list = (read_json(path, []) or [])[:start_epoch]
        self._resumed = resumed

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self._t
        images = self.train_images * (self.steps - self.batch_offset) / self.steps  # a resumed epoch's rest
        self.batch_offset = 0
        entry = {"epoch": epoch + 1}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if logs and key in logs:
                entry[key] = float(logs[key])
        entry["seconds"] = round(seconds, 3)
        entry["images_per_second"] = round(images / seconds, 1) if seconds > 0 else None
        if self._resumed:
            entry["resumed"] = True
            self._resumed = False
        entry["train_elapsed"] = round(sum(e["seconds"] for e in self.entries) + seconds, 3)
        if self.test is not None:
            x, y = self.test
            with ema_weights(self.model):
                probs = self.model.predict(x, verbose=0)
            entry["test_accuracy"] = float((probs.argmax(axis=1) == y).mean())
        self.entries.append(entry)
        write_json(self.path, self.entries, commit=self.commit)
        prometheus.epoch_ended(seconds, entry["images_per_second"])
        log.info("epoch %d: loss %.4f accuracy %.4f val_loss %.4f val_accuracy %.4f, %.1f s, %s images/s%s",
                 epoch + 1, entry.get("loss", float("nan")), entry.get("accuracy", float("nan")),
                 entry.get("val_loss", float("nan")), entry.get("val_accuracy", float("nan")), seconds,
                 entry["images_per_second"], " (resumed)" if entry.get("resumed") else "")


class BackupCallback(keras.callbacks.Callback):
    """Saves a backup generation (digitq.worker.backup) at every epoch end and every `every`
    batches (0: epoch ends only). When `hand_back()` turns true (the worker was asked to stop),
    saves one at once, at this batch, and raises JobHandedBack so the job goes back to the queue.

    List it after HistoryCallback: an epoch's history entry is then written before the backup
    that counts the epoch as done."""

    def __init__(self, store: BackupStore, steps_per_epoch: int, every: int = 0,
                 hand_back: Callable[[], bool] | None = None):
        super().__init__()
        self.store = store
        self.steps = steps_per_epoch
        self.every = every
        self.hand_back = hand_back
        self.batch_offset = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _save(self, epoch: int, batch: int) -> None:
        self.store.save(self.model, epoch, batch, self.steps)

    def _handing_back(self) -> bool:
        return self.hand_back is not None and self.hand_back()

    def _hand_back(self, epoch: int, batch: int):
        log.info("worker stopping: job backed up at epoch %d batch %d of %d (%s); handing it back to the queue",
                 epoch + 1, batch, self.steps, self.store.folder)
        return JobHandedBack(f"worker stopping: the job was backed up at epoch {epoch + 1} batch {batch} and "
                             "goes back to the queue")

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:  # nothing trained since the epoch began, or since the backup this fit resumed from
            return
        done = self.batch_offset + batch  # batches of this epoch done
        if self._handing_back():
            self._save(self._epoch, done)
            raise self._hand_back(self._epoch, done)
        if self.every and done % self.every == 0:
            self._save(self._epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        self.batch_offset = 0
        self._save(epoch + 1, 0)
        if self._handing_back() and epoch + 1 < self.params.get("epochs", epoch + 2):
            raise self._hand_back(epoch + 1, 0)
