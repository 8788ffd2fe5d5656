"""A training run's backups, `<job folder>/backup/`: whole generations written atomically and
checked before a redelivered job resumes from one.

    backup/gen-000012/weights.weights.h5   the model's and the optimizer's variables (Keras save_weights)
    backup/gen-000012/state.json           {"epoch", "batch", "steps_per_epoch", "iterations", "weights_sha256"}

    store = BackupStore(folder / "backup")
    resume = store.restore(model, steps_per_epoch)   # before fit; Resume(epoch=0, batch=0) when none is usable
    store.save(model, epoch=2, batch=17, steps_per_epoch=47)
    store.clear()                                     # once model.keras is saved

Why not Keras' BackupAndRestore: it rewrites `latest.weights.h5` and `training_metadata.json`
in place, so a kill during a save leaves half a file that fails every later delivery, and its
`double_checkpoint` copies the old files in place too. Here a save writes a fresh temporary
folder (files fsynced) and renames it to the next `gen-<n>` in one step, then deletes all but
the newest KEEP generations: a kill at any moment leaves complete generations and at most one
temporary folder, which the next restore removes.

A generation is used only if its state.json parses, its weights hash to the recorded sha256, they
load into the model, and the optimizer's step counter then equals the recorded one: weights and
state always come from the same save. An unusable generation is named in one log line and the
previous one is tried; with none left the job starts over from random weights at epoch 0, never
from random weights under an old epoch count.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Callable

from digitq.worker.data import sha256_of

log = logging.getLogger("digitq.worker.train")

KEEP = 2
"""Generations kept: the newest and the one before it (the fallback if the newest is damaged)."""

WEIGHTS = "weights.weights.h5"
STATE = "state.json"
FORMAT = 1
"""state.json's layout version."""

_GEN_RE = re.compile(r"^gen-(\d{6,})\Z")
LEGACY_FILES = ("latest.weights.h5", "training_metadata.json")
"""What Keras' BackupAndRestore wrote (digitq before atomic backups): still resumed from, if valid."""


@dataclasses.dataclass
class Resume:
    """Where training resumes: `epoch` epochs done and `batch` batches of the next one (0, 0: from
    scratch). `source` is the generation's folder, None when starting over."""

    epoch: int = 0
    batch: int = 0
    source: Path | None = None
    unusable: list = dataclasses.field(default_factory=list)  # [(path, reason)] skipped on the way


class UnusableBackup(Exception):
    """A backup generation that cannot be resumed from; the message says why."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


class BackupStore:
    """The generations in one `backup/` folder. `guard()` (optional) is asked just before a new
    generation is renamed into place: False (e.g. this worker lost the job's lease) discards it."""

    def __init__(self, folder: Path, guard: Callable[[], bool] | None = None):
        self.folder = Path(folder)
        self.guard = guard

    # --- saving ------------------------------------------------------------------------------

    def generations(self) -> list[Path]:
        """Complete generations, newest first."""
        if not self.folder.is_dir():
            return []
        gens = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _GEN_RE.match(p.name))]
        return [p for _, p in sorted(gens, reverse=True)]

    def _remove_temporaries(self, prefix: str = ".tmp-") -> None:
        for p in self.folder.glob(f"{prefix}*"):
            shutil.rmtree(p, ignore_errors=True)

    @staticmethod
    def _own_prefix() -> str:
        return f".tmp-{socket.gethostname()}-{os.getpid()}-"

    def save(self, model, epoch: int, batch: int, steps_per_epoch: int) -> Path | None:
        """Write a new generation: `epoch` epochs and `batch` batches of the next one done.
        Returns its folder, or None if the guard refused it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        gens = self.generations()
        number = int(gens[0].name[4:]) + 1 if gens else 1
        tmp = self.folder / f"{self._own_prefix()}{number:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            weights = tmp / WEIGHTS
            model.save_weights(str(weights))
            _fsync_file(weights)
            state = {"format": FORMAT, "epoch": int(epoch), "batch": int(batch),
                     "steps_per_epoch": int(steps_per_epoch), "iterations": _iterations(model),
                     "weights_sha256": sha256_of(weights)}
            with open(tmp / STATE, "w") as f:
                json.dump(state, f)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            if self.guard is not None and not self.guard():
                shutil.rmtree(tmp, ignore_errors=True)
                return None
            while True:
                final = self.folder / f"gen-{number:06d}"
                try:
                    os.rename(tmp, final)  # atomic: the generation appears complete or not at all
                    break
                except OSError:
                    if not final.exists():
                        raise
                    number += 1  # another process saved this number meanwhile (a stale holder)
            _fsync_dir(self.folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in [*gens[KEEP - 1:], *(self.folder / name for name in LEGACY_FILES)]:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            elif old.exists():
                old.unlink()
        self._remove_temporaries(self._own_prefix())  # only ours: another may be writing its own
        return final

    def clear(self) -> None:
        """Delete every backup (the job's model is saved: nothing left to resume)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- resuming ----------------------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self.generations()) or (self.folder / LEGACY_FILES[1]).exists()

    def restore(self, model, steps_per_epoch: int, epochs: int) -> Resume:
        """Load the newest usable generation into `model` (built and compiled) and say where to
        resume; log one line per unusable generation. The model keeps its fresh weights when none
        is usable."""
        if not self.folder.is_dir():
            return Resume()
        self._remove_temporaries()
        candidates = self.generations()
        if (self.folder / LEGACY_FILES[0]).exists() or (self.folder / LEGACY_FILES[1]).exists():
            candidates.append(self.folder)  # a Keras BackupAndRestore backup: oldest, no checksum
        if not candidates:
            return Resume()
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)  # its variables must exist to be loaded into
        fresh = _snapshot(model)
        skipped = []
        for gen in candidates:
            try:
                state = self._load(model, gen, steps_per_epoch, epochs)
            except UnusableBackup as exc:
                _reset(model, fresh)  # a half-done load must not leak into the next try
                skipped.append((gen, str(exc)))
                nxt = "trying the previous backup" if gen is not candidates[-1] else \
                    "starting over from epoch 1 (the model's fresh weights)"
                log.warning("backup %s is unusable (%s); %s", gen, exc, nxt)
                continue
            return Resume(state["epoch"], state["batch"], gen, skipped)
        return Resume(unusable=skipped)

    def _load(self, model, gen: Path, steps_per_epoch: int, epochs: int) -> dict:
        legacy = gen == self.folder
        weights = gen / (LEGACY_FILES[0] if legacy else WEIGHTS)
        state_path = gen / (LEGACY_FILES[1] if legacy else STATE)
        try:
            state = json.loads(state_path.read_text())
        except FileNotFoundError:
            raise UnusableBackup(f"{state_path.name} is missing") from None
        except (OSError, ValueError) as exc:
            raise UnusableBackup(f"{state_path.name} is unreadable: {type(exc).__name__}") from None
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or state["epoch"] < 0:
            raise UnusableBackup(f"{state_path.name} has no epoch")
        if not weights.exists():
            raise UnusableBackup(f"{weights.name} is missing")
        if not legacy and sha256_of(weights) != state.get("weights_sha256"):
            raise UnusableBackup(f"{weights.name} does not match its checksum (a half-written or damaged file)")
        try:
            model.load_weights(str(weights))
        except Exception as exc:  # h5py/Keras raise OSError, ValueError, KeyError... on a bad file
            raise UnusableBackup(f"{weights.name} does not load: {str(exc).splitlines()[0][:200]}") from None
        epoch, batch = state["epoch"], int(state.get("batch") or 0)
        if legacy:
            batch = 0  # Keras resumed at epoch granularity
        elif _iterations(model) != state.get("iterations"):
            raise UnusableBackup(f"its optimizer has taken {_iterations(model)} steps, its state says "
                                 f"{state.get('iterations')}")
        saved_steps = int(state.get("steps_per_epoch") or steps_per_epoch)
        if batch and saved_steps != steps_per_epoch:  # another replica count: same share of the epoch
            batch = min(steps_per_epoch - 1, round(batch * steps_per_epoch / saved_steps))
        if epoch > epochs or (epoch == epochs and batch):
            raise UnusableBackup(f"it is at epoch {epoch + 1} of a {epochs}-epoch job")
        if batch >= steps_per_epoch:
            epoch, batch = epoch + 1, 0
        return {"epoch": epoch, "batch": batch}


def _iterations(model) -> int | None:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    return int(optimizer.iterations.numpy() if hasattr(optimizer.iterations, "numpy") else optimizer.iterations)


def _variables(model) -> list:
    optimizer = getattr(model, "optimizer", None)
    return [*model.weights, *(optimizer.variables if optimizer is not None else [])]


def _snapshot(model) -> list:
    import numpy as np

    return [np.array(v.numpy() if hasattr(v, "numpy") else v) for v in _variables(model)]


def _reset(model, values: list) -> None:
    for v, value in zip(_variables(model), values):
        v.assign(value)
