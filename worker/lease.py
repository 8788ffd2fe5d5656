"""The lease a worker holds on a running training job: one holder, a fencing token, a heartbeat.

Taking the lease (one Lua script, so all of it or nothing):
- `digitq:lease:<job_id>` = the owner, with a TTL (`DIGITQ_LEASE_SECONDS`) that only Redis'
  clock counts down; only its holder trains the job.
- `digitq:fence:<job_id>` is incremented: the new value is this holder's fencing token
  (digitq.common.fencing). Every write that makes the job's outcome visible is done only while
  the token holds (`commit`), so a worker paused past its TTL, whose job another worker took
  over, writes nothing when it wakes: it raises LeaseLost at its next check.
- the job's message is kept in `digitq:running` (job id -> task, queue, payload) until the job
  ends (`finish`). A worker that dies leaves the record without a lease; an idle worker's sweep
  re-publishes it (digitq.worker.watchdog). So the broker's message is no longer the only copy,
  and a duplicate delivery can be acknowledged without risk.

The heartbeat thread renews the TTL every TTL/3 while the token holds, and refreshes the job's
message in kombu's `unacked_index` with Redis' own TIME (never the worker's clock, which may be
off), so the visibility timeout never redelivers a live job. A worker whose lease vanished
while no other worker took the job (it was paused or cut off past the TTL, or Redis restarted
empty or failed over and lost the keys) takes it back at its next beat, running record
included; a job re-published meanwhile then finds the lease held and is dropped as a duplicate.
Once another worker has taken the job, the counter is past this worker's token: it has lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from digitq.common.errors import LeaseLost
from digitq.common.fencing import HOLDS_LUA, Fence
from digitq.common.names import RUNNING_KEY, fence_key, lease_key, takeover_key
from digitq.worker.compat import UNACKED_INDEX_KEY, refresh_unacked_script

log = logging.getLogger("digitq.worker")

FENCE_TTL = 30 * 24 * 3600
"""Seconds a job's fence counter outlives the last heartbeat of its last holder."""

COMMIT_RETRY_SECONDS = 30.0
"""How long a fenced write waits for an unreachable Redis to answer before giving the job up."""

_ACQUIRE = """
local cur = redis.call('get', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
local token = redis.call('incr', KEYS[2])
redis.call('expire', KEYS[2], ARGV[5])
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[4] ~= '' then redis.call('hset', KEYS[3], ARGV[3], ARGV[4]) end
redis.call('del', KEYS[4])
return token
"""
"""KEYS = lease, fence counter, running, takeover claim; ARGV = owner, ttl, job id, record, fence
ttl. Returns the new token, or 0 when another owner holds the lease."""

_BEAT = f"""
redis.replicate_commands()
local token = tonumber(ARGV[2])
local counter = tonumber(redis.call('get', KEYS[2]) or '0')
local cur = redis.call('get', KEYS[1])
local status = 0
if cur == ARGV[1] and counter == token then
  redis.call('expire', KEYS[1], ARGV[3])
  redis.call('expire', KEYS[2], ARGV[6])
  status = 1
elseif (not cur) and counter <= token then
  redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[6])
  redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[3])
  if ARGV[5] ~= '' then redis.call('hset', KEYS[3], ARGV[4], ARGV[5]) end
  status = 2
end
if status > 0 and ARGV[7] ~= '' then
{refresh_unacked_script('KEYS[4]', 'ARGV[7]')}
end
return status
"""
"""KEYS = lease, fence counter, running, unacked index; ARGV = owner, token, ttl, job id, record,
fence ttl, delivery tag. 1: renewed; 2: the lease had vanished but nobody took the job since
(this worker was paused or cut off past the TTL, or Redis lost its keys): taken back; 0: lost,
another worker holds a larger token."""

_FINISH = f"""
if not {HOLDS_LUA} then return 0 end
redis.call('hdel', KEYS[3], ARGV[3])
redis.call('del', KEYS[1])
return 1
"""
"""KEYS = lease, fence counter, running; ARGV = owner, token, job id: the job ended here."""

_RELEASE = f"""
if not {HOLDS_LUA} then return 0 end
return redis.call('del', KEYS[1])
"""


def drop_if_unleased(r, job_id: str) -> bool:
    """Forget the running record of a job that nobody holds (it finished, or was cancelled)."""
    script = "if redis.call('exists', KEYS[1]) == 0 then return redis.call('hdel', KEYS[2], ARGV[1]) end return 0"
    return bool(r.eval(script, 2, lease_key(job_id), RUNNING_KEY, job_id))


class JobLease:
    """`with JobLease(r, job_id, owner, ttl, record=...) as lease:` holds the job (or
    `lease.acquired` is False: another worker holds it).

    `record` (task, queue, payload) is what the sweep re-publishes if this worker dies. Leaving
    the block releases the lease but keeps the record (the job goes to another worker within a
    sweep) unless `finish()` said the job ended here."""

    def __init__(self, r, job_id: str, owner: str, ttl: int, delivery_tag: str | None = None,
                 record: dict | None = None, unacked_index_key: str = UNACKED_INDEX_KEY):
        self.r = r
        self.job_id = job_id
        self.key = lease_key(job_id)
        self.owner = owner
        self.ttl = int(ttl)
        self.delivery_tag = delivery_tag
        self.record = json.dumps(record) if record is not None else ""
        self.unacked_index_key = unacked_index_key
        self.acquired = False
        self.lost = False
        self.fence: Fence | None = None
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()  # one beat at a time: the heartbeat thread's and check()'s

    @property
    def token(self) -> int | None:
        return self.fence.token if self.fence else None

    def holder(self) -> str | None:
        v = self.r.get(self.key)
        return v.decode() if v else None

    def __enter__(self) -> "JobLease":
        token = int(self.r.eval(_ACQUIRE, 4, self.key, fence_key(self.job_id), RUNNING_KEY,
                                takeover_key(self.job_id), self.owner, self.ttl, self.job_id, self.record, FENCE_TTL))
        self.acquired = token > 0
        if self.acquired:
            self.fence = Fence(self.job_id, self.owner, token)
            self._beat()
            self._thread = threading.Thread(target=self._run, name=f"lease-{self.key}", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> bool:
        """Renew the lease in Redis; False (and `lost` set, a warning logged) once it is gone."""
        with self._lock:
            return self._beat_locked()

    def _beat_locked(self) -> bool:
        if self.lost:
            return False
        status = int(self.r.eval(_BEAT, 4, self.key, fence_key(self.job_id), RUNNING_KEY, self.unacked_index_key,
                                 self.owner, self.token, self.ttl, self.job_id, self.record, FENCE_TTL,
                                 self.delivery_tag or ""))
        if status == 2:
            log.warning("the lease of job %s had vanished (this worker paused, or Redis restarted) and nobody took "
                        "the job: taken back with token %d", self.job_id, self.token)
        if status == 0:
            self.lost = True
            now = self.holder()
            log.warning("lost the lease of job %s (token %d): %s took it over; this worker stops the job and "
                        "writes nothing more", self.job_id, self.token, now or "another worker")
        return status > 0

    def _run(self) -> None:
        interval = max(self.ttl / 3.0, 0.5)
        while not self._stop.wait(interval):
            try:
                if not self._beat():
                    return
            except Exception as exc:  # broker blip: keep beating, the TTL covers a few misses
                log.warning("lease heartbeat for %s failed: %s", self.key, exc)

    def check(self) -> None:
        """Raise LeaseLost if this worker no longer holds the job (called during training, about
        once a second). A broker that does not answer is no proof of loss: training goes on and
        the heartbeat keeps trying."""
        try:
            held = self._beat()
        except Exception as exc:
            log.debug("lease check of %s failed: %s", self.key, exc)
            return
        if not held:
            raise LeaseLost(f"lost the lease of job {self.job_id}: another worker took it over")

    def commit(self) -> None:
        """Raise LeaseLost unless Redis confirms, now, that this worker holds the job: called
        right before each write that makes the outcome visible (the rename of a finished file).
        The check renews the TTL, so no other worker can take the job for `ttl` seconds after it.
        Waits up to COMMIT_RETRY_SECONDS for an unreachable Redis."""
        deadline = time.monotonic() + COMMIT_RETRY_SECONDS
        while True:
            try:
                held = self._beat()
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise LeaseLost(f"could not confirm the lease of job {self.job_id}: {exc}") from None
                time.sleep(1.0)
        if not held:
            raise LeaseLost(f"lost the lease of job {self.job_id}: another worker took it over")

    def finish(self) -> bool:
        """The job ended here (success, failure or cancel): forget its running record and free
        the lease, while the token holds. False if the job is not ours any more."""
        if not self.acquired or self.lost:
            return False
        try:
            return bool(self.r.eval(_FINISH, 3, self.key, fence_key(self.job_id), RUNNING_KEY,
                                    self.owner, self.token, self.job_id))
        except Exception as exc:  # the sweep finds it finished and drops the record
            log.warning("could not close the running record of %s: %s", self.job_id, exc)
            return False

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.acquired and not self.lost:
            try:
                self.r.eval(_RELEASE, 2, self.key, fence_key(self.job_id), self.owner, self.token)
            except Exception as e:  # it expires on its own
                log.warning("could not release lease %s: %s", self.key, e)
