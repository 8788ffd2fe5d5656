"""The lease a worker holds on a running job, renewed by a heartbeat thread.

Two things are kept fresh while a job runs:
- `digitq:lease:<job_id>` (SET NX with a TTL): only its holder trains the job. A second
  delivery of the same job while the lease lives does not start a second training.
- the job message's entry in kombu's `unacked_index` (score = time it was taken): Redis
  redelivers an un-acked message `visibility_timeout` seconds after that time, so refreshing it
  keeps a long job from being redelivered while its worker is alive. Once the worker dies the
  heartbeat stops, and the job goes back to the queue `visibility_timeout` later. That index is
  kombu's private structure: digitq.worker.compat (`refresh_unacked`) is the one place that
  touches it.
"""

from __future__ import annotations

import logging
import threading

from digitq.worker.compat import UNACKED_INDEX_KEY, refresh_unacked

log = logging.getLogger("digitq.worker")

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) else return 0 end
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


class JobLease:
    """`with JobLease(...) as lease:` holds the lease (or `lease.acquired` is False)."""

    def __init__(self, r, key: str, owner: str, ttl: int, delivery_tag: str | None = None,
                 unacked_index_key: str = UNACKED_INDEX_KEY):
        self.r = r
        self.key = key
        self.owner = owner
        self.ttl = int(ttl)
        self.delivery_tag = delivery_tag
        self.unacked_index_key = unacked_index_key
        self.acquired = False
        self.lost = False
        self._stop = threading.Event()
        self._thread = None

    def holder(self) -> str | None:
        v = self.r.get(self.key)
        return v.decode() if v else None

    def __enter__(self) -> "JobLease":
        self.acquired = bool(self.r.set(self.key, self.owner, nx=True, ex=self.ttl))
        if not self.acquired and self.holder() == self.owner:  # our own earlier delivery died mid-job
            self.acquired = bool(self.r.set(self.key, self.owner, xx=True, ex=self.ttl))
        if self.acquired:
            self._beat()
            self._thread = threading.Thread(target=self._run, name=f"lease-{self.key}", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        renewed = self.r.eval(_RENEW, 1, self.key, self.owner, self.ttl)
        if not renewed and not self.lost:
            self.lost = True
            log.warning("lost the lease %s (expired or taken over)", self.key)
        if self.delivery_tag:
            refresh_unacked(self.r, self.delivery_tag, self.unacked_index_key)

    def _run(self) -> None:
        interval = max(self.ttl / 3.0, 0.5)
        while not self._stop.wait(interval):
            try:
                self._beat()
            except Exception as exc:  # broker blip: keep beating, the TTL covers a few misses
                log.warning("lease heartbeat for %s failed: %s", self.key, exc)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.acquired:
            try:
                self.r.eval(_RELEASE, 1, self.key, self.owner)
            except Exception as e:  # it expires on its own
                log.warning("could not release lease %s: %s", self.key, e)
