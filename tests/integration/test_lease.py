"""The job lease, its fencing token and the takeover sweep against a real redis-server: one
holder, heartbeat renewal, expiry on death, a holder that lost the job writes nothing, and a
dead worker's job is put back on its queue exactly once."""

import json
import threading
import time

import pytest

from digitq.common.errors import LeaseLost
from digitq.common.names import RUNNING_KEY, fence_key, lease_key
from digitq.common.registry import list_models, register_model
from digitq.worker import job_folder
from digitq.worker.lease import JobLease
from digitq.worker.watchdog import sweep

pytestmark = pytest.mark.redis

RECORD = {"task": "digitq.train", "queue": "train", "payload": {"name": "m", "epochs": 1}}


def die(lease: JobLease) -> None:
    """The holder stops beating without releasing anything (kill -9, SIGSTOP)."""
    lease._stop.set()
    lease._thread.join()


def test_one_holder_at_a_time_and_release(redis_server):
    r = redis_server.client()
    with JobLease(r, "j1", "a:1", ttl=3) as a:
        assert a.acquired and a.token == 1
        with JobLease(r, "j1", "b:2", ttl=3) as b:
            assert not b.acquired and b.holder() == "a:1"
        time.sleep(4)  # longer than the TTL: the heartbeat (every ttl/3) keeps it
        assert r.get(lease_key("j1")) == b"a:1" and not a.lost
        a.check()
    assert r.get(lease_key("j1")) is None
    with JobLease(r, "j1", "b:2", ttl=3) as b:
        assert b.acquired and b.token == 2  # each holder gets a larger token


def test_a_dead_holder_lease_expires(redis_server):
    r = redis_server.client()
    a = JobLease(r, "j2", "a:1", ttl=1).__enter__()
    die(a)
    time.sleep(1.6)
    with JobLease(r, "j2", "b:2", ttl=1) as b:
        assert b.acquired


def test_a_holder_that_lost_the_job_writes_nothing(redis_server, tmp_path):
    """The fence: a holder paused past its TTL, whose job another worker took, fails every check
    (its training stops), registers no model and renames none of its files; the new holder's
    writes go through, and its lease is not touched by the old holder's release."""
    r = redis_server.client()
    old = JobLease(r, "j3", "old:1", ttl=1, record=RECORD).__enter__()
    die(old)
    time.sleep(1.5)
    new = JobLease(r, "j3", "new:2", ttl=5, record=RECORD).__enter__()
    assert new.acquired and new.token == old.token + 1
    with pytest.raises(LeaseLost):
        old.check()
    assert old.lost
    with pytest.raises(LeaseLost):
        old.commit()
    with pytest.raises(LeaseLost):
        register_model(r, "fenced", "j3", {"arch": "cnn", "path": "x"}, fence=old.fence)
    (tmp_path / "job").mkdir()
    target = tmp_path / "job" / "result.json"
    with pytest.raises(LeaseLost):
        job_folder.write_json(target, {"by": "old"}, commit=old.commit)
    assert not target.exists() and list(target.parent.iterdir()) == [], "no temp file left behind"
    assert not old.finish()
    old.__exit__(None, None, None)
    assert r.get(lease_key("j3")) == b"new:2" and r.hexists(RUNNING_KEY, "j3")

    assert register_model(r, "fenced", "j3", {"arch": "cnn", "path": "x", "members": []}, fence=new.fence) == 1
    assert register_model(r, "fenced", "j3", {"arch": "cnn", "path": "x"}, fence=new.fence) == 1  # once per job
    (rec,) = list_models(r)
    assert (rec["version"], rec["job_id"], rec["members"]) == (1, "j3", [])
    job_folder.write_json(target, {"by": "new"}, commit=new.commit)
    assert json.loads(target.read_text()) == {"by": "new"}
    assert new.finish()
    new.__exit__(None, None, None)
    assert not r.exists(lease_key("j3")) and not r.hexists(RUNNING_KEY, "j3")


def test_a_holder_whose_lease_expired_while_nobody_took_the_job_takes_it_back(redis_server):
    """Paused past its TTL but not taken over: the holder's next beat takes the lease back, and a
    delivery the sweep re-published meanwhile finds it held (a duplicate)."""
    r = redis_server.client()
    a = JobLease(r, "j4", "a:1", ttl=1, record=RECORD).__enter__()
    die(a)
    time.sleep(1.5)
    assert not r.exists(lease_key("j4"))
    a.check()
    assert r.get(lease_key("j4")) == b"a:1" and not a.lost
    with JobLease(r, "j4", "b:2", ttl=1, record=RECORD) as b:
        assert not b.acquired
    assert a.finish()


def test_a_holder_takes_back_what_an_emptied_redis_lost(redis_server):
    """Redis restarted without its data (or a failover lost writes): the holder's next beat
    puts its lease, token and running record back instead of dropping the job."""
    r = redis_server.client()
    with JobLease(r, "j5", "a:1", ttl=3, record=RECORD) as a:
        r.flushall()
        a.check()
        assert r.get(lease_key("j5")) == b"a:1" and int(r.get(fence_key("j5"))) == a.token
        assert json.loads(r.hget(RUNNING_KEY, "j5")) == RECORD


def test_heartbeat_refreshes_the_message_with_redis_clock_never_re_adding_an_acked_one(redis_server):
    r = redis_server.client()
    r.zadd("unacked_index", {"tag-1": 1.0})
    with JobLease(r, "j6", "a:1", ttl=3, delivery_tag="tag-1"):
        seconds, micros = r.time()
        assert abs(r.zscore("unacked_index", "tag-1") - (seconds + micros / 1e6)) < 2
        r.zrem("unacked_index", "tag-1")  # acked
        time.sleep(1.5)
        assert r.zscore("unacked_index", "tag-1") is None


def test_the_sweep_puts_a_dead_workers_job_back_exactly_once(redis_server):
    """Four workers sweep at once: one re-publishes the job whose lease vanished, none touches
    the live one, and a finished job's record is dropped."""
    r = redis_server.client()
    live = JobLease(r, "live", "a:1", ttl=5, record=RECORD).__enter__()
    dead = JobLease(r, "dead", "b:2", ttl=1, record=RECORD).__enter__()
    done = JobLease(r, "done", "c:3", ttl=1, record=RECORD).__enter__()
    die(dead)
    die(done)
    r.set("celery-task-meta-done", json.dumps({"status": "SUCCESS"}))
    time.sleep(1.5)
    published = []
    threads = [threading.Thread(target=sweep, args=(r, lambda *a: published.append(a), f"w{i}", 60))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert published == [("digitq.train", RECORD["payload"], "dead", "train")]
    assert sweep(r, lambda *a: published.append(a), "w9", 60) == []  # claimed: not again
    assert not r.hexists(RUNNING_KEY, "done") and r.hexists(RUNNING_KEY, "dead")
    with JobLease(r, "dead", "d:4", ttl=5, record=RECORD) as taken:  # the new delivery takes it
        assert taken.acquired
    live.__exit__(None, None, None)


def test_a_worker_that_stops_hands_its_job_to_the_sweep_at_once(redis_server):
    """Leaving the lease without `finish()` (a worker stopping: JobHandedBack, SIGTERM) frees the
    lease but keeps the running record, so the next sweep re-publishes the job; `finish()`
    (the job ended) leaves nothing to re-publish."""
    r = redis_server.client()
    published = []
    with JobLease(r, "handed", "a:1", ttl=30, record=RECORD):
        pass
    with JobLease(r, "ended", "a:1", ttl=30, record=RECORD) as ended:
        ended.finish()
    assert sweep(r, lambda *a: published.append(a[2]), "w1", 60) == ["handed"] == published
