"""The takeover sweep: every worker looks, every few seconds, for training jobs whose worker died,
and one of them puts each such job back on its queue.

A worker that takes a job records it in `digitq:running` and holds its lease
(digitq.worker.lease). A record whose lease has vanished (its worker was killed, its machine
vanished, or it was paused past the TTL) and whose job has not finished is re-published, with
the same task id, by exactly one worker: the one whose Lua claim (`digitq:takeover:<job_id>`,
NX) succeeds. The next free worker resumes it from its backup. So a dead worker's job waits
about `DIGITQ_LEASE_SECONDS` + SWEEP_INTERVAL, whatever the visibility timeout, which stays
only as the last resort (a worker killed between taking a message and recording it).

Only Redis' state and TTLs decide; the workers' clocks play no part. A live job is never
re-published: its heartbeat keeps the lease. A cancelled job is re-published too: the worker
that receives it marks it REVOKED at once and drops the record.
"""

from __future__ import annotations

import json
import logging
import threading

from digitq.common.celery_keys import task_meta_key
from digitq.common.names import FINISHED_STATES, RUNNING_KEY, lease_key, takeover_key
from digitq.worker.lease import drop_if_unleased

log = logging.getLogger("digitq.worker")

SWEEP_INTERVAL = 5.0
"""Seconds between two sweeps of a worker (each costs one HGETALL of the running jobs)."""

_CLAIM = """
if redis.call('hexists', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('exists', KEYS[2]) == 1 then return 0 end
if redis.call('set', KEYS[3], ARGV[2], 'NX', 'EX', ARGV[3]) then return 1 end
return 0
"""
"""KEYS = running, lease, takeover claim; ARGV = job id, claimer, claim ttl: 1 for the one
worker that re-publishes the job (the claim lasts until a worker takes the job's lease, or ttl)."""


def _finished(r, job_id: str) -> bool:
    raw = r.get(task_meta_key(job_id))
    if not raw:
        return False
    try:
        return json.loads(raw).get("status") in FINISHED_STATES
    except ValueError:
        return False


def sweep(r, publish, claimer: str, claim_ttl: int) -> list[str]:
    """One sweep: re-publish (through `publish(task, payload, job_id, queue)`) each recorded
    job that no worker holds and that has not finished; forget finished ones. Returns the ids
    re-published by this caller."""
    republished = []
    for raw_id, raw in (r.hgetall(RUNNING_KEY) or {}).items():
        job_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        if r.exists(lease_key(job_id)):
            continue  # alive
        if _finished(r, job_id):
            drop_if_unleased(r, job_id)
            continue
        if not r.eval(_CLAIM, 3, RUNNING_KEY, lease_key(job_id), takeover_key(job_id), job_id, claimer, claim_ttl):
            continue  # another worker re-publishes it, or did so lately
        rec = json.loads(raw)
        publish(rec["task"], rec["payload"], job_id, rec["queue"])
        log.warning("job %s: its worker stopped holding it (lease gone); put it back on the %s queue", job_id,
                    rec["queue"])
        republished.append(job_id)
    return republished


class Watchdog:
    """Runs `sweep` every SWEEP_INTERVAL seconds from a daemon thread while the worker runs.

    `app` is a Celery app used only to publish (its own connections, not the consumer's)."""

    def __init__(self, r, app, claimer: str, claim_ttl: int, interval: float = SWEEP_INTERVAL):
        self.r = r
        self.app = app
        self.claimer = claimer
        self.claim_ttl = claim_ttl
        self.interval = interval
        self._stop = threading.Event()

    def publish(self, task: str, payload: dict, job_id: str, queue: str) -> None:
        self.app.send_task(task, args=[payload], task_id=job_id, queue=queue)

    def start(self) -> "Watchdog":
        threading.Thread(target=self._run, name="takeover-sweep", daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                sweep(self.r, self.publish, self.claimer, self.claim_ttl)
            except Exception as exc:  # a broker blip: the next sweep retries
                log.warning("takeover sweep failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
