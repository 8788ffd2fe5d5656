"""The job folder: a training job's files on the shared volume, `<DIGITQ_HOME>/jobs/<job_id>/`,
and the atomic JSON writes every file there that a user or a redelivery may read goes through.

    request.json   the validated TrainRequest
    history.json   one entry per epoch (loss, accuracy, val_loss, val_accuracy, seconds, images/s)
    backup/        backup generations (digitq.worker.backup); a redelivered job resumes from one (deleted on success)
    tensorboard/   TensorBoard event files
    model.keras    the trained model
    result.json    the TrainResult; a finished job delivered again returns it without retraining

history.json, test_probs.npy, model.keras and result.json are written under the job lease's
fence: to a temp name of the writer's own, renamed only while its token holds
(digitq.worker.lease), so a worker that lost the job never overwrites its new holder's files.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from digitq.common.schemas import check_job_id
from digitq.common.settings import Settings


def job_dir(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / check_job_id(job_id)


def write_json(path: Path, obj, commit: Callable[[], None] | None = None) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a file.

    With `commit` (a job lease's fence check, raising LeaseLost), the temp file, whose name is
    this writer's own, is renamed only if `commit()` passes; otherwise it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if commit is not None:
            commit()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def temp_name(path: Path) -> Path:
    """A name beside `path` that only this writer uses (same suffix, so Keras and NumPy accept
    it): write there, then `commit_file`."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.partial{path.suffix}")


def commit_file(tmp: Path, path: Path, commit: Callable[[], None] | None = None) -> None:
    """Rename the finished `tmp` to `path` once `commit()` passes (see write_json); on failure
    the temp file is removed, so nothing of this writer is left behind."""
    try:
        if commit is not None:
            commit()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
