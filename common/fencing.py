"""Fencing tokens: the proof that a worker still holds the job it writes for.

Each time a worker takes a job's lease it increments `digitq:fence:<job_id>` and keeps the
number (its token). A write that makes the job's outcome visible is done only while the lease
still names the worker AND the counter still equals its token: a worker that was paused or cut
off past its lease's TTL, while another took the job over, finds a larger number and writes
nothing. Both checks use Redis' own state and TTLs, never the workers' clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from digitq.common.names import fence_key, lease_key

HOLDS_LUA = ("(redis.call('get', KEYS[1]) == ARGV[1] and "
             "tonumber(redis.call('get', KEYS[2]) or '0') == tonumber(ARGV[2]))")
"""A Lua expression, true while the fence KEYS[1..2] = (lease, counter), ARGV[1..2] = (owner,
token) holds; the scripts that write under a fence start with it."""

_HOLDS = f"if {HOLDS_LUA} then return 1 else return 0 end"


@dataclass(frozen=True)
class Fence:
    """The lease `owner` took on `job_id` with `token` (see the module docstring)."""

    job_id: str
    owner: str
    token: int

    def keys(self) -> list[str]:
        return [lease_key(self.job_id), fence_key(self.job_id)]

    def args(self) -> list:
        return [self.owner, self.token]

    def holds(self, r) -> bool:
        """One atomic look in Redis: does this worker still hold the job?"""
        return bool(r.eval(_HOLDS, 2, *self.keys(), *self.args()))
