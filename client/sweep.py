"""Sweeps from the client's side: submit, read, wait, cancel; Client's sweep_* methods call these.

The client reads digitq's own records of a sweep (digitq.common.sweep), which the workers keep
up to date at each epoch's end; it never imports Optuna, whose journal only workers replay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import redis

from digitq.common.errors import DigitqError, InvalidRequest, NoSuchJob
from digitq.common.names import FINISHED_STATES, TRAIN_QUEUE, TRAIN_TASK, JobState
from digitq.common.sweep import (
    FINAL_TRIAL_STATES, SWEEPS_INDEX_KEY, SweepRequest, asked_key, check_sweep_id, enqueue_slot, load_record,
    load_trials, new_sweep_id, sweep_cancel_key, sweep_key,
)

if TYPE_CHECKING:
    from digitq.client.api import Client

FINAL_SWEEP_STATES = frozenset({"complete", "failed", "cancelled"})


@dataclass
class SweepStatus:
    """A sweep as `digitq sweep status` shows it: its request, state, and one record per trial
    asked so far (slot order), with the live epoch of running trials."""

    sweep_id: str
    state: str  # running, complete, failed, cancelled
    request: dict
    trials: list = field(default_factory=list)
    best: dict | None = None  # slot, number, job_id, params, value (val accuracy), test_accuracy
    model: str | None = None  # NAME:VERSION registered from the best trial
    created: float | None = None
    finished: float | None = None

    @property
    def total(self) -> int:
        return int(self.request.get("trials", 0))

    def counts(self) -> dict:
        out: dict = {}
        for t in self.trials:
            out[t.get("state", "queued")] = out.get(t.get("state", "queued"), 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"sweep_id": self.sweep_id, "state": self.state, "trials": self.trials, "best": self.best,
                "model": self.model, "request": self.request, "created": self.created, "finished": self.finished}


def submit(client: Client, request: SweepRequest) -> str:
    """Record the sweep and queue its first P trials; returns the sweep id."""
    request.check()
    client.check_dataset(request.base.get("dataset", "mnist"))
    client.match_local_worker()
    r = client.redis
    sweep_id = new_sweep_id()
    ttl = client.settings.result_ttl
    now = time.time()
    import json

    pipe = r.pipeline()
    pipe.hset(sweep_key(sweep_id), mapping={"request": json.dumps(request.to_dict()), "state": "running",
                                           "created": now})
    pipe.expire(sweep_key(sweep_id), ttl)
    pipe.set(asked_key(sweep_id), request.parallel, ex=ttl)
    pipe.zadd(SWEEPS_INDEX_KEY, {sweep_id: now})
    pipe.zremrangebyscore(SWEEPS_INDEX_KEY, 0, now - ttl)
    pipe.execute()

    def enqueue(job_id: str, payload: dict) -> None:
        client.app.send_task(TRAIN_TASK, args=[payload], task_id=job_id, queue=TRAIN_QUEUE)

    for slot in range(1, request.parallel + 1):
        enqueue_slot(r, sweep_id, request, slot, enqueue, ttl)
    return sweep_id


def status(client: Client, sweep_id: str, live: bool = True) -> SweepStatus:
    """The sweep's records; with `live`, a running trial's epoch and batch from its job's progress."""
    check_sweep_id(sweep_id)
    r = client.redis
    rec = load_record(r, sweep_id)
    if rec is None:
        raise NoSuchJob(f"no sweep {sweep_id} (it never existed, or its record expired)")
    trials = [t for _, t in sorted(load_trials(r, sweep_id).items())]
    if live:
        for t in trials:
            if t.get("state") == "running":
                try:
                    st = client.status(t["job_id"])
                except (NoSuchJob, redis.exceptions.RedisError):
                    continue
                p = st.progress or {}
                if p.get("phase") == "train":
                    t["live"] = {k: p.get(k) for k in ("epoch", "epochs", "batch", "batches", "val_accuracy")}
    return SweepStatus(sweep_id, rec.get("state", "running"), rec.get("request") or {}, trials, rec.get("best"),
                       rec.get("model"), rec.get("created"), rec.get("finished"))


def wait(client: Client, sweep_id: str, on_update: Callable[[SweepStatus], None] | None = None,
         timeout: float | None = None, poll: float = 0.5) -> SweepStatus:
    """Block until the sweep is complete, failed or cancelled; return its last status. Connection
    errors (a broker restart) are retried until `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            st = status(client, sweep_id)
        except redis.exceptions.ConnectionError:
            st = None
        if st is not None:
            if on_update:
                on_update(st)
            if st.state in FINAL_SWEEP_STATES:
                return st
        if deadline is not None and time.monotonic() > deadline:
            raise DigitqError(f"sweep {sweep_id} still running after {timeout:.0f} s; "
                              f"`digitq sweep wait {sweep_id}` waits again")
        time.sleep(poll)


def cancel(client: Client, sweep_id: str) -> SweepStatus:
    """Stop a sweep: no more trials are queued, queued ones never run, running ones stop within
    seconds (their workers read the sweep's and the job's cancel flags about once a second)."""
    st = status(client, sweep_id, live=False)
    if st.state in FINAL_SWEEP_STATES:
        return st
    r = client.redis
    ttl = client.settings.result_ttl
    r.set(sweep_cancel_key(sweep_id), 1, ex=ttl)
    r.hset(sweep_key(sweep_id), mapping={"state": "cancelled", "finished": time.time()})
    import json

    from digitq.common.sweep import trials_key

    for t in st.trials:
        if t.get("state") in FINAL_TRIAL_STATES:
            continue
        try:
            job = client.status(t["job_id"])
            if job.state not in FINISHED_STATES:
                client.cancel(t["job_id"])
        except NoSuchJob:
            pass
        if t.get("state") == "queued":  # never started: its worker will drop it unrun
            t["state"] = "cancelled"
            r.hset(trials_key(sweep_id), t["slot"], json.dumps(t))
    return status(client, sweep_id, live=False)


def check_options(trials: int, parallel: int | None) -> None:
    """N and P in range, before anything else (the SweepRequest checks them again)."""
    from digitq.common.sweep import MAX_PARALLEL, MAX_TRIALS

    if not 1 <= trials <= MAX_TRIALS:
        raise InvalidRequest(f"--trials must be between 1 and {MAX_TRIALS}, got {trials}")
    if parallel is not None and not 1 <= parallel <= MAX_PARALLEL:
        raise InvalidRequest(f"--parallel must be between 1 and {MAX_PARALLEL}, got {parallel}")


def default_parallel(client: Client, trials: int) -> int:
    """P when the user gives none: the live workers that serve the train queue (at least 1, at
    most N), so that no trial waits in the queue ahead of other users' jobs."""
    try:
        workers = [w for w in client.workers() if TRAIN_QUEUE in (w.get("queues") or [])]
    except redis.exceptions.RedisError:
        workers = []
    return max(1, min(trials, len(workers)))


__all__ = ["SweepStatus", "cancel", "check_options", "default_parallel", "status", "submit", "wait",
           "JobState"]
