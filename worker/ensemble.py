"""What a worker does around an ensemble's member job (see digitq.common.ensemble for the record):

    result = run_train_message(job_id, train, settings, r, app, owner)   # the train task calls this

A job that is no member trains and registers as before. A member trains as a normal job without
registering its own model; then its finish is counted (once, atomically), the next members are
queued up to the ensemble's limit, and the worker that counts the last finish registers the
ensemble: the average of the members' saved test probabilities, scored on the test set, one
model version (`register_model` is keyed by the parent id, and `finalize` runs under a lock).

Everything here is safe to run again: a member delivered again after it finished returns its
stored result, is not counted twice, re-sends only what its first delivery queued and that has
not finished, and finds the ensemble registered or registers it (a worker killed while
registering leaves the member's message un-acked; its redelivery does the registering).

A member that fails fails the ensemble (the others are cancelled); a member cancelled on its own
cancels the ensemble.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

import numpy as np

from digitq.common import ensemble
from digitq.common.celery_keys import task_meta_key
from digitq.common.errors import DataError, DigitqError, EnsembleMemberFailed, JobCancelled, JobHandedBack, LeaseLost
from digitq.common.names import FINISHED_STATES, TRAIN_QUEUE, TRAIN_TASK, cancel_key, log_key
from digitq.common.registry import register_model
from digitq.common.schemas import TrainResult
from digitq.common.settings import Settings
from digitq.worker import job_folder

log = logging.getLogger("digitq.worker")

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


def run_train_message(job_id: str, train: Callable[[bool], dict], settings: Settings, r, app, owner: str) -> dict:
    """Run a train message: `train(register)` trains it (digitq.worker.train_job.run_train_job);
    for an ensemble's member, count its finish, queue the next members and register the ensemble
    when it is the last."""
    from digitq.worker.train_job import JobAlreadyRunning

    link = ensemble.parent_of(r, job_id)
    if link is None:
        return train(True)
    parent, k = link
    try:
        result = train(False)
        member_finished(parent, k, result, settings, r, app, owner)
        return result
    except (JobAlreadyRunning, LeaseLost, JobHandedBack):  # the member goes on elsewhere: not a failure
        raise
    except JobCancelled:
        member_cancelled(parent, k, settings, r, app)
        raise
    except Exception as exc:
        reason = str(exc) if isinstance(exc, DigitqError) else f"{type(exc).__name__}: {exc}"
        fail_ensemble(parent, k, reason.splitlines()[0] if reason else "failed", settings, r, app)
        raise


def send_member(app, rec: ensemble.EnsembleRecord, k: int) -> None:
    """Put member k on the train queue (a duplicate of a queued or running member is harmless)."""
    app.send_task(TRAIN_TASK, args=[ensemble.member_request(rec.request, k).to_dict()],
                  task_id=ensemble.member_id(rec.parent, k), queue=TRAIN_QUEUE)


def note(r, parent: str, ttl: int, text: str) -> None:
    """A line in the parent's log (`digitq logs PARENT`) and in this member's."""
    log.info(text)
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        pipe = r.pipeline()
        pipe.rpush(log_key(parent), f"{stamp} INFO {text}")
        pipe.expire(log_key(parent), ttl)
        pipe.execute()
    except Exception as exc:  # a log line must never fail the ensemble
        log.warning("could not log to %s: %s", parent, exc)


def member_finished(parent: str, k: int, result: dict, settings: Settings, r, app, owner: str) -> None:
    """Count member k's finish, queue the next members, and register the ensemble after the last."""
    rec = ensemble.EnsembleRecord.load(r, parent)
    if rec is None:
        log.warning("ensemble %s has no record any more (expired?): member %d finished alone", parent, k + 1)
        return
    step = ensemble.member_done(r, parent, k, ensemble.dispatch_limit(r, rec.parallel))
    for i in step.send:
        send_member(app, rec, i)
    queued = f"; queued member(s) {', '.join(str(i + 1) for i in step.send)}" if step.send else ""
    again = "" if step.first else " (delivered again)"
    note(r, parent, settings.result_ttl,
         f"ensemble {parent}: member {k + 1}/{step.k} finished{again}, test accuracy "
         f"{result.get('test_accuracy', float('nan')):.4f}; {step.done}/{step.k} done{queued}")
    if step.all_done:
        finalize(parent, settings, r, app, owner)


def finalize(parent: str, settings: Settings, r, app, owner: str) -> dict | None:
    """Register the finished ensemble once and store the parent's result; returns it (None when
    another worker is registering it right now, or the ensemble was cancelled)."""
    lock = ensemble.finalize_key(parent)
    if not r.set(lock, owner, nx=True, ex=max(settings.lease_seconds, 30)):
        log.info("ensemble %s: another worker is registering it", parent)
        return None
    try:
        rec = ensemble.EnsembleRecord.load(r, parent)
        if rec is None or rec.cancelled:
            return None
        folder = job_folder.job_dir(settings, parent)
        data = job_folder.read_json(folder / "result.json")
        if data is None:
            data = _combine(rec, settings, r, owner)
            note(r, parent, settings.result_ttl, f"ensemble {parent}: registered {data['model']}, test accuracy "
                 f"{data['test_accuracy']:.4f} (members {', '.join(f'{a:.4f}' for a in data['member_accuracies'])})")
        app.backend.store_result(parent, data, "SUCCESS")
        r.hset(ensemble.record_key(parent), "model", data["model"])
        return data
    finally:
        r.eval(_RELEASE, 1, lock, owner)


def _combine(rec: ensemble.EnsembleRecord, settings: Settings, r, owner: str) -> dict:
    """Average the members' test probabilities, register the ensemble, write the parent's folder."""
    from digitq.worker import data
    from digitq.worker.scoring import score_predictions

    results, probs = [], []
    for i, m in enumerate(rec.members):
        mf = job_folder.job_dir(settings, m)
        res = job_folder.read_json(mf / "result.json")
        if res is None:
            raise DataError(f"member {i + 1}/{rec.k} ({m}) counted as done but has no result.json in {mf}")
        results.append(res)
        probs.append(np.load(mf / "test_probs.npy") if (mf / "test_probs.npy").exists() else None)
    req = rec.request
    ds = data.load_dataset(settings, req.dataset, req.validation_size, req.train_size, req.test_size, req.seed)
    if ds.test is not None and len(ds.test) and all(p is not None for p in probs):
        scores = score_predictions(average_probs(probs), ds.test.y)
        member_acc = [score_predictions(p, ds.test.y)["accuracy"] for p in probs]
    else:
        scores = {"accuracy": float("nan"), "loss": float("nan"), "per_class_accuracy": [], "confusion": []}
        member_acc = []
    folder = job_folder.job_dir(settings, rec.parent)
    paths = [str(job_folder.job_dir(settings, m) / "model.keras") for m in rec.members]
    version = register_model(r, req.name, rec.parent, {
        "arch": req.arch,
        "hyperparameters": req.to_dict(),
        "dataset": results[0].get("dataset"),
        "test_accuracy": scores["accuracy"],
        "test_loss": scores["loss"],
        "path": str(folder),
        "kind": "ensemble",
        "members": paths,
        "member_jobs": rec.members,
    })
    first = results[0]
    result = TrainResult(
        job_id=rec.parent, state="SUCCESS", test_accuracy=scores["accuracy"], test_loss=scores["loss"],
        per_class_accuracy=scores["per_class_accuracy"], confusion=scores["confusion"], epochs=first["epochs"],
        wall_seconds=round(time.time() - rec.submitted, 3),
        train_seconds=round(sum(res["train_seconds"] for res in results), 3),
        model=f"{req.name}:{version}", arch=req.arch, model_path=str(folder),
        history=[{**e, "member": i + 1} for i, res in enumerate(results) for e in res.get("history") or []],
        replicas=first.get("replicas", 1), devices=sorted({d for res in results for d in res.get("devices") or []}),
        train_images=first.get("train_images", 0), dataset=first.get("dataset", req.dataset), worker=owner,
        members=paths, member_accuracies=member_acc,
        warnings=sorted({w for res in results for w in res.get("warnings") or []}),
        resumed=any(res.get("resumed") for res in results),
        member_jobs=list(rec.members), member_workers=[res.get("worker", "") for res in results],
    ).to_dict()
    _write_parent_folder(folder, rec)
    job_folder.write_json(folder / "result.json", result)  # last: it marks the ensemble registered
    return result


def average_probs(probs: list) -> np.ndarray:
    """The ensemble's probabilities: the members' mean (float64), each member weighing the same."""
    return np.mean(np.stack([np.asarray(p, np.float64) for p in probs]), axis=0)


def _write_parent_folder(folder, rec: ensemble.EnsembleRecord) -> None:
    """request.json and `member-<k>` links to the members' folders: the layout of an ensemble
    trained in one job, so `digitq report PARENT` and TensorBoard find the members."""
    folder.mkdir(parents=True, exist_ok=True)
    job_folder.write_json(folder / "request.json", rec.request.to_dict())
    for i, m in enumerate(rec.members):
        link = folder / f"member-{i}"
        if not link.is_symlink():
            tmp = folder / f".member-{i}.{os.getpid()}"
            if tmp.is_symlink():
                tmp.unlink()
            os.symlink(os.path.join("..", m), tmp)
            os.replace(tmp, link)


def _parent_finished(r, parent: str) -> bool:
    import json

    raw = r.get(task_meta_key(parent))
    return bool(raw) and json.loads(raw).get("status") in FINISHED_STATES


def _stop_members(parent: str, k: int, settings: Settings, r) -> None:
    """No more members are queued; the queued and running ones stop (their cancel flags)."""
    for m in ensemble.cancel(r, parent):
        if m != ensemble.member_id(parent, k):
            r.set(cancel_key(m), 1, ex=settings.result_ttl)


def fail_ensemble(parent: str, k: int, reason: str, settings: Settings, r, app) -> None:
    """Member k failed: the ensemble fails with its reason, and its other members stop."""
    try:
        _stop_members(parent, k, settings, r)
        if not _parent_finished(r, parent):
            rec = ensemble.EnsembleRecord.load(r, parent)
            total = rec.k if rec else "?"
            message = f"member {k + 1}/{total} ({ensemble.member_id(parent, k)}) failed: {reason}"[:500]
            app.backend.mark_as_failure(parent, EnsembleMemberFailed(message))
            note(r, parent, settings.result_ttl, f"ensemble {parent}: {message}")
    except Exception as exc:  # the member's own failure is what gets reported
        log.warning("could not fail ensemble %s: %s", parent, exc)


def member_cancelled(parent: str, k: int, settings: Settings, r, app) -> None:
    """Member k was cancelled: by `digitq cancel PARENT` (nothing more to do), or on its own, which
    cancels the ensemble."""
    rec = ensemble.EnsembleRecord.load(r, parent)
    if rec is None or rec.cancelled:
        return
    _stop_members(parent, k, settings, r)
    if not _parent_finished(r, parent):
        app.backend.mark_as_revoked(parent, reason=f"member {k + 1}/{rec.k} was cancelled")
        note(r, parent, settings.result_ttl, f"ensemble {parent}: cancelled with its member {k + 1}/{rec.k}")
