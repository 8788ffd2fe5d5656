"""The job lease against a real redis-server: one holder, heartbeat renewal, expiry on death."""

import time

import pytest

from digitq.worker.lease import JobLease

pytestmark = pytest.mark.redis


def test_one_holder_at_a_time_and_release(redis_server):
    r = redis_server.client()
    with JobLease(r, "digitq:lease:j1", "a:1", ttl=3) as a:
        assert a.acquired
        with JobLease(r, "digitq:lease:j1", "b:2", ttl=3) as b:
            assert not b.acquired and b.holder() == "a:1"
        time.sleep(4)  # longer than the TTL: the heartbeat (every ttl/3) keeps it
        assert r.get("digitq:lease:j1") == b"a:1" and not a.lost
    assert r.get("digitq:lease:j1") is None
    with JobLease(r, "digitq:lease:j1", "b:2", ttl=3) as b:
        assert b.acquired


def test_a_dead_holder_lease_expires(redis_server):
    r = redis_server.client()
    a = JobLease(r, "digitq:lease:j2", "a:1", ttl=1).__enter__()
    a._stop.set()  # the holder dies: no more heartbeats, no release
    time.sleep(1.6)
    with JobLease(r, "digitq:lease:j2", "b:2", ttl=1) as b:
        assert b.acquired


def test_heartbeat_refreshes_the_message_but_never_re_adds_an_acked_one(redis_server):
    r = redis_server.client()
    r.zadd("unacked_index", {"tag-1": 1.0})
    with JobLease(r, "digitq:lease:j3", "a:1", ttl=3, delivery_tag="tag-1"):
        assert r.zscore("unacked_index", "tag-1") > time.time() - 5
        r.zrem("unacked_index", "tag-1")  # acked
        time.sleep(1.5)
        assert r.zscore("unacked_index", "tag-1") is None
