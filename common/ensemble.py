"""An ensemble fanned out over the workers: its record in Redis and the atomic bookkeeping of
its members (no TensorFlow; the client and the worker share it).

`digitq submit-train --ensemble K` queues K member jobs, each a normal training job with its own
id (`<parent>-m<k>`), folder, progress, backups and resume; the submitted (parent) id has no
Celery task of its own. Its record, `digitq:ensemble:<parent>` (a hash), says how far it got:

    k           K, the number of members
    parallel    at most this many members queued or running at once (0: the live train workers)
    request     the parent's TrainRequest (JSON); member k trains it with seed + k, ensemble 1
    dispatched  members 0 .. dispatched-1 have been put on the queue
    done        how many members have finished; done:<k> = 1 once member k has
    next:<k>    the members that member k's finish put on the queue (sent again on a redelivery)
    cancelled   set by a cancel or a failed member: nothing more is dispatched
    model       NAME:VERSION, once the ensemble is registered

Each update is one Lua script, so two workers finishing members at the same moment, or a member
delivered twice, never dispatch a member twice nor lose one: a member's finish is counted once
(`done:<k>`), and what it dispatched is remembered (`next:<k>`), so a redelivery of a member
whose worker died right after counting sends the same members again (a duplicate message of a
member is harmless: its lease or its stored result stops the second delivery).

Fair share: at most `parallel` members are queued or running at once; the next one is queued
when one finishes, behind whatever other users queued meanwhile, so a single job submitted while
a big ensemble runs starts as soon as a worker finishes its current member.
"""

from __future__ import annotations

import dataclasses
import json
import time

from digitq.common.celery_keys import task_meta_key
from digitq.common.errors import InvalidRequest
from digitq.common.announcements import live_train_workers  # also used from here by tests and bench
from digitq.common.names import KEY_PREFIX
from digitq.common.schemas import TrainRequest

MAX_PARALLEL = 64
"""Largest `--parallel` accepted (members queued or running at once)."""


def check_parallel(parallel: int, k: int) -> int:
    """`--parallel`: 0 (the live train workers) to MAX_PARALLEL, and only for an ensemble."""
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 0 <= parallel <= MAX_PARALLEL:
        raise InvalidRequest(f"--parallel must be between 0 and {MAX_PARALLEL}, got {parallel!r}")
    if parallel and k < 2:
        raise InvalidRequest("--parallel limits an ensemble's members: use it with --ensemble K (K >= 2)")
    return parallel


def record_key(parent: str) -> str:
    """The ensemble's record (hash, see the module docstring)."""
    return f"{KEY_PREFIX}ensemble:{parent}"


def link_key(member: str) -> str:
    """`<parent> <k>` for a member job id: how a worker knows a job is member k of an ensemble."""
    return f"{KEY_PREFIX}ensemble-member:{member}"


def finalize_key(parent: str) -> str:
    """Held (SET NX with a TTL) by the one worker registering the finished ensemble."""
    return f"{KEY_PREFIX}ensemble:{parent}:finalize"


def member_id(parent: str, k: int) -> str:
    """Member k's job id (0-based k): also its Celery task id and its job folder's name."""
    return f"{parent}-m{k}"


def member_request(request: TrainRequest, k: int) -> TrainRequest:
    """Member k trains the parent's recipe with seed + k, as a single model."""
    return dataclasses.replace(request, seed=request.seed + k, ensemble=1)


@dataclasses.dataclass
class EnsembleRecord:
    """The parts of the record a reader needs."""

    parent: str
    k: int
    parallel: int
    request: TrainRequest
    submitted: float
    dispatched: int
    done: int
    cancelled: bool
    model: str | None

    @property
    def members(self) -> list[str]:
        return [member_id(self.parent, i) for i in range(self.k)]

    @classmethod
    def load(cls, r, parent: str) -> "EnsembleRecord | None":
        raw = {k.decode(): v.decode() for k, v in r.hgetall(record_key(parent)).items()}
        if "k" not in raw:
            return None
        return cls(parent, int(raw["k"]), int(raw.get("parallel", 0)), TrainRequest.from_dict(json.loads(raw["request"])),
                   float(raw.get("submitted", 0)), int(raw.get("dispatched", 0)), int(raw.get("done", 0)),
                   "cancelled" in raw, raw.get("model"))


def create(r, parent: str, request: TrainRequest, parallel: int, ttl: int) -> EnsembleRecord:
    """Write a new ensemble's record and its members' links (nothing dispatched yet)."""
    now = time.time()
    pipe = r.pipeline()
    pipe.hset(record_key(parent), mapping={"k": request.ensemble, "parallel": parallel, "submitted": now,
                                           "request": json.dumps(request.to_dict()), "dispatched": 0, "done": 0})
    pipe.expire(record_key(parent), ttl)
    for k in range(request.ensemble):
        pipe.set(link_key(member_id(parent, k)), f"{parent} {k}", ex=ttl)
    pipe.execute()
    return EnsembleRecord.load(r, parent)


def parent_of(r, job_id: str) -> tuple[str, int] | None:
    """(parent id, k) when `job_id` is an ensemble's member, else None."""
    raw = r.get(link_key(job_id))
    if not raw:
        return None
    parent, k = raw.decode().split(" ")
    return parent, int(k)


# KEYS[1] record. ARGV[1] limit (members queued or running at once). Returns the members (0-based)
# to put on the queue now, marking them dispatched.
_DISPATCH = """
local K = tonumber(redis.call('hget', KEYS[1], 'k'))
if not K or redis.call('hexists', KEYS[1], 'cancelled') == 1 then return {} end
local dispatched = tonumber(redis.call('hget', KEYS[1], 'dispatched'))
local done = tonumber(redis.call('hget', KEYS[1], 'done'))
local n = math.min(tonumber(ARGV[1]) - (dispatched - done), K - dispatched)
local out = {}
for i = dispatched, dispatched + n - 1 do out[#out + 1] = i end
if n > 0 then redis.call('hset', KEYS[1], 'dispatched', dispatched + n) end
return out
"""

# KEYS[1] record. ARGV[1] k (the member that finished), ARGV[2] limit. Counts member k once; the
# first time, dispatches up to the limit and remembers what it sent in next:<k>. Returns
# {done, K, first (1/0), members to send...}: on a redelivery (first 0), next:<k>'s members that
# have not finished yet, to be sent again (their worker may have died before sending them).
_MEMBER_DONE = """
local K = tonumber(redis.call('hget', KEYS[1], 'k'))
if not K then return {-1, 0, 0} end
local first = redis.call('hsetnx', KEYS[1], 'done:' .. ARGV[1], 1)
local sent = {}
if first == 1 then
  local done = redis.call('hincrby', KEYS[1], 'done', 1)
  local dispatched = tonumber(redis.call('hget', KEYS[1], 'dispatched'))
  local n = 0
  if redis.call('hexists', KEYS[1], 'cancelled') == 0 then
    n = math.min(tonumber(ARGV[2]) - (dispatched - done), K - dispatched)
  end
  for i = dispatched, dispatched + n - 1 do sent[#sent + 1] = i end
  if n > 0 then redis.call('hset', KEYS[1], 'dispatched', dispatched + n) end
  redis.call('hset', KEYS[1], 'next:' .. ARGV[1], table.concat(sent, ','))
else
  local nxt = redis.call('hget', KEYS[1], 'next:' .. ARGV[1]) or ''
  for i in string.gmatch(nxt, '%d+') do
    if redis.call('hexists', KEYS[1], 'done:' .. i) == 0 then sent[#sent + 1] = tonumber(i) end
  end
end
local out = {tonumber(redis.call('hget', KEYS[1], 'done')), K, first}
for _, i in ipairs(sent) do out[#out + 1] = i end
return out
"""


def dispatch(r, parent: str, limit: int) -> list[int]:
    """Claim the members to queue now so that at most `limit` are queued or running."""
    return [int(i) for i in r.eval(_DISPATCH, 1, record_key(parent), max(1, int(limit)))]


@dataclasses.dataclass
class MemberDone:
    """What counting a member's finish decided."""

    done: int  # members finished so far
    k: int  # K
    first: bool  # False: this member's finish had been counted before (a redelivery)
    send: list  # members to put on the queue now

    @property
    def all_done(self) -> bool:
        return self.k > 0 and self.done >= self.k


def member_done(r, parent: str, k: int, limit: int) -> MemberDone:
    """Count member k's finish (once, however often it is delivered) and claim what to queue next."""
    out = [int(v) for v in r.eval(_MEMBER_DONE, 1, record_key(parent), int(k), max(1, int(limit)))]
    return MemberDone(out[0], out[1], bool(out[2]), out[3:])


def cancel(r, parent: str) -> list[str]:
    """Stop dispatching the ensemble's members; returns all its member ids (to flag and revoke)."""
    r.hset(record_key(parent), "cancelled", 1)
    rec = EnsembleRecord.load(r, parent)
    return rec.members if rec else []


def dispatch_limit(r, parallel: int) -> int:
    """`parallel`, else (0) the live train workers, at least 1: re-read at every member's finish,
    so workers added meanwhile are used."""
    return parallel if parallel > 0 else max(1, live_train_workers(r))


# --- the parent's state, from its members' ------------------------------------------------------

_PROGRESS_KEYS = ("epoch", "epochs", "batch", "batches", "loss", "accuracy", "val_accuracy", "images_per_second")


def parent_progress(r, rec: EnsembleRecord) -> tuple[str, dict]:
    """(state, progress) of a running ensemble: PENDING until a member starts, then PROGRESS with
    `ensemble` (K), `members_done`, `running` (1-based members), the fields of the running member
    furthest behind (`member`, epoch, batch, loss, ...; no ETA: that would be the member's) and `completed_batches` of `total_batches`."""
    members = rec.members[: rec.dispatched]
    metas = r.mget([task_meta_key(m) for m in members]) if members else []
    running, per_member = [], {}
    for i, raw in enumerate(metas):
        meta = json.loads(raw) if raw else {}
        if meta.get("status") in ("STARTED", "PROGRESS") and not r.hexists(record_key(rec.parent), f"done:{i}"):
            running.append(i + 1)
            if meta.get("status") == "PROGRESS" and isinstance(meta.get("result"), dict):
                per_member[i + 1] = meta["result"]
    progress = {"phase": "queued", "ensemble": rec.k, "members_done": rec.done, "running": running}
    if not running and rec.done == 0:
        return "PENDING", progress
    training = {m: p for m, p in per_member.items() if p.get("phase") == "train"}
    if training:
        m = min(training, key=lambda j: (training[j].get("epoch", 0), training[j].get("batch", 0)))
        p = training[m]
        progress.update({"phase": "train", "member": m, **{key: p[key] for key in _PROGRESS_KEYS if key in p}})
        per_epoch = p.get("batches", 0)
        per_run = p.get("epochs", 1) * per_epoch
        progress["total_batches"] = rec.k * per_run
        progress["completed_batches"] = rec.done * per_run + sum(
            (q.get("epoch", 1) - 1) * per_epoch + q.get("batch", 0) for q in training.values())
    elif per_member:
        progress["phase"] = next(iter(per_member.values())).get("phase", "starting")
    else:
        progress["phase"] = "starting" if running else "training"
    return "PROGRESS", progress
