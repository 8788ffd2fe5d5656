"""The job folder: a training job's files on the shared volume, `<DIGITQ_HOME>/jobs/<job_id>/`,
and the atomic JSON writes every file there that a user or a redelivery may read goes through.

    request.json   the validated TrainRequest
    history.json   one entry per epoch (loss, accuracy, val_loss, val_accuracy, seconds, images/s)
    backup/        backup generations (digitq.worker.backup); a redelivered job resumes from one (deleted on success)
    tensorboard/   TensorBoard event files
    model.keras    the trained model
    result.json    the TrainResult; a finished job delivered again returns it without retraining
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from digitq.common.schemas import check_job_id
from digitq.common.settings import Settings


def job_dir(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / check_job_id(job_id)


def write_json(path: Path, obj) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: Path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
