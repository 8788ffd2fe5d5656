"""What a worker does with one training job message, as plain functions the train task calls.

Kept apart from tasks.py so tests call them directly: validate the message, skip a job that is
cancelled or already finished, hold the job's lease (digitq.worker.lease), train
(digitq.worker.train), register the model, store the result in the job folder
(digitq.worker.job_folder); each outcome write fenced by the lease's token.
"""

from __future__ import annotations

import logging
from typing import Callable

from digitq.common.errors import DigitqError, JobCancelled, JobHandedBack
from digitq.common.names import TRAIN_QUEUE, TRAIN_TASK, cancel_key
from digitq.common.redis_client import while_full
from digitq.common.registry import register_model
from digitq.common.schemas import TrainRequest, check_job_id
from digitq.common.settings import Settings
from digitq.worker import job_folder
from digitq.worker.lease import JobLease, drop_if_unleased

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
                  delivery_tag: str | None = None, register: bool = True, sweep_hooks=None) -> dict:
    """Run one training job message and return its TrainResult as a dict.

    A job whose result.json exists (a redelivery after it finished) returns that result
    without training again; a cancelled job raises JobCancelled before or during training;
    a job whose lease another worker holds raises JobAlreadyRunning (that worker's running
    record keeps the job, so this delivery may be acknowledged); a worker that loses the lease
    mid-job raises LeaseLost and has written nothing of the job's outcome. `register` False: an
    ensemble's member (digitq.worker.ensemble), whose model is registered only as part of the
    ensemble. A sweep's trial (`sweep` set) trains through digitq.worker.sweep instead
    (`sweep_hooks`: digitq.worker.sweep.SweepHooks), under the same lease.
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
        drop_if_unleased(r, job_id)
        return on_done(job_id, done, r)
    if is_cancelled(r, job_id):
        drop_if_unleased(r, job_id)
        raise JobCancelled("job cancelled before it started")
    record = {"task": TRAIN_TASK, "queue": TRAIN_QUEUE, "payload": payload}
    with JobLease(r, job_id, owner, settings.lease_seconds, delivery_tag, record=record) as lease:
        if not lease.acquired:
            raise JobAlreadyRunning(f"job {job_id} is running on {lease.holder() or 'another worker'}")
        try:
            done = job_folder.read_json(folder / "result.json")  # it may have finished meanwhile
            if done is not None:
                done = on_done(job_id, done, r)
            else:
                done = body(job_id, request, settings, r, report, owner, lease, register)
        except JobHandedBack:  # the worker stops: the lease goes, the record stays for the sweep
            raise
        except Exception:  # failed or cancelled: it ends here (a no-op once the lease is lost)
            lease.finish()
            raise
        lease.finish()
        return done


def guarded(lease: JobLease, r, job_id: str, report, stop_too: Callable[[], bool] | None = None):
    """(should_stop, report) for digitq.worker.train.train under `lease`: both check the lease
    first (raising LeaseLost once another worker took the job), so a worker that lost the job
    neither trains on nor turns its state back to PROGRESS; `should_stop` is also true once the
    job is cancelled, or `stop_too()` is."""

    def should_stop() -> bool:
        lease.check()  # raises LeaseLost
        return is_cancelled(r, job_id) or (stop_too is not None and stop_too())

    def fenced_report(meta: dict) -> None:
        lease.check()
        if report is not None:
            report(meta)

    return should_stop, fenced_report


def _train_and_register(job_id: str, request: TrainRequest, settings: Settings, r, report, owner: str,
                        lease: JobLease, register: bool = True) -> dict:
    """Train under `lease`: the lease is checked with the cancel flag about once a second and
    before each progress report, and every outcome write (files, registry, result.json) is
    fenced by its token."""
    from digitq.worker.train import train

    should_stop, fenced_report = guarded(lease, r, job_id, report)
    folder = job_folder.job_dir(settings, job_id)
    result = train(request, job_id, settings, report=fenced_report, should_stop=should_stop, commit=lease.commit)
    if not register:  # an ensemble's member: digitq.worker.ensemble registers the ensemble
        result.worker = owner
        data = result.to_dict()
        job_folder.write_json(folder / "result.json", data, commit=lease.commit)
        return data
    record = {
        "arch": request.arch,
        "hyperparameters": request.to_dict(),
        "dataset": result.dataset,
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "path": result.model_path,
        "kind": "ensemble" if result.members else "single",
        "members": result.members,
    }
    # Redis full (maxmemory): the trained model waits for room rather than being trained again.
    version = while_full(lambda: register_model(r, request.name, job_id, record, fence=lease.fence),
                         f"the model of job {job_id} waits to be registered", f"the model of job {job_id} is registered")
    result.model = f"{request.name}:{version}"
    result.worker = owner
    data = result.to_dict()
    job_folder.write_json(folder / "result.json", data, commit=lease.commit)
    return data
