"""What a worker does with one training job message, as plain functions the train task calls.

Kept apart from tasks.py so tests call them directly: validate the message, skip a job that is
cancelled or already finished, hold the job's lease, train (digitq.worker.train), register the
model, store the result in the job folder (digitq.worker.job_folder).
"""

from __future__ import annotations

import logging

from digitq.common.errors import DigitqError, JobCancelled
from digitq.common.names import cancel_key, lease_key
from digitq.common.registry import register_model
from digitq.common.schemas import TrainRequest, check_job_id
from digitq.common.settings import Settings
from digitq.worker import job_folder
from digitq.worker.lease import JobLease

log = logging.getLogger("digitq.worker")


class JobAlreadyRunning(DigitqError):
    """Another live worker holds this job's lease: this delivery is a duplicate."""


def is_cancelled(r, job_id: str) -> bool:
    """True once `digitq cancel` flagged the job; False while the broker is unreachable."""
    try:
        return bool(r.exists(cancel_key(job_id)))
    except Exception as exc:  # a broker restart must not kill a running training
        log.warning("could not read the cancel flag of %s: %s", job_id, exc)
        return False


def run_train_job(job_id: str, payload, settings: Settings, r, report=None, owner: str = "worker",
                  delivery_tag: str | None = None, sweep_hooks=None) -> dict:
    """Run one training job message and return its TrainResult as a dict.

    A job whose result.json exists (a redelivery after it finished) returns that result
    without training again; a cancelled job raises JobCancelled before or during training;
    a job whose lease another worker holds raises JobAlreadyRunning. A sweep's trial (`sweep` set)
    trains through digitq.worker.sweep instead (`sweep_hooks`: digitq.worker.sweep.SweepHooks).
    """
    check_job_id(job_id)
    request = TrainRequest.from_dict(payload)
    body, on_done = _train_and_register, (lambda job_id, data, r: data)
    if request.sweep is not None:  # --- a sweep's trial: its params, pruning, the next trial ---
        from digitq.worker.sweep import trial_steps

        body, on_done = trial_steps(request, sweep_hooks)
    folder = job_folder.job_dir(settings, job_id)
    done = job_folder.read_json(folder / "result.json")
    if done is not None:
        log.info("job %s already finished; returning its stored result", job_id)
        return on_done(job_id, done, r)
    if is_cancelled(r, job_id):
        raise JobCancelled("job cancelled before it started")
    with JobLease(r, lease_key(job_id), owner, settings.lease_seconds, delivery_tag) as lease:
        if not lease.acquired:
            raise JobAlreadyRunning(f"job {job_id} is running on {lease.holder() or 'another worker'}")
        done = job_folder.read_json(folder / "result.json")  # it may have finished meanwhile
        if done is not None:
            return on_done(job_id, done, r)
        return body(job_id, request, settings, r, report, owner)


def _train_and_register(job_id: str, request: TrainRequest, settings: Settings, r, report, owner: str) -> dict:
    from digitq.worker.train import train

    folder = job_folder.job_dir(settings, job_id)
    result = train(request, job_id, settings, report=report, should_stop=lambda: is_cancelled(r, job_id))
    version = register_model(r, request.name, job_id, {
        "arch": request.arch,
        "hyperparameters": request.to_dict(),
        "dataset": result.dataset,
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "path": result.model_path,
        "kind": "ensemble" if result.members else "single",
        "members": result.members,
    })
    result.model = f"{request.name}:{version}"
    result.worker = owner
    data = result.to_dict()
    job_folder.write_json(folder / "result.json", data)
    return data
