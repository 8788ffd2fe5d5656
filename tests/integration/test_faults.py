"""Fault injection with real processes: kill -9 workers, restart redis-server, duplicate
deliveries, cancel, a full shared volume. Each test asserts what a user is promised
(README "Guarantees"): nothing lost, no job trained twice at once, little work repeated.

Timeouts are short here (visibility 15 s, lease 5 s) so that recovery happens within a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from digitq.client.api import Client
from digitq.common.names import TRAIN_TASK, lease_key
from digitq.common.registry import list_models
from digitq.common.schemas import TrainRequest
from tests.helpers import backed_up_epochs, history, training_starts, wait_for
from tests.processes import WorkerProcess, run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]

FAST_RECOVERY = {"DIGITQ_VISIBILITY_TIMEOUT": "15", "DIGITQ_LEASE_SECONDS": "5"}


def job_request(name: str, epochs: int = 3, train_size: int = 4000, **kw) -> TrainRequest:
    return TrainRequest(name=name, epochs=epochs, train_size=train_size, validation_size=300, test_size=300,
                        batch_size=32, **kw)


def holder_pid(r, job_id) -> int | None:
    v = r.get(lease_key(job_id))
    return int(v.decode().rsplit(":", 1)[1]) if v else None


@pytest.fixture
def stack(redis_server, tmp_path, data_dir, monkeypatch):
    """A redis-server of the test's own and a factory for workers on it; all stopped at the end."""
    home = tmp_path / "home"
    home.mkdir()
    for k, v in FAST_RECOVERY.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DIGITQ_HOME", str(home))
    monkeypatch.setenv("DIGITQ_BROKER_URL", redis_server.url)
    workers = []

    def start(*names: str):
        """Start workers side by side (TensorFlow's import takes one core each), then wait until
        all are ready; one name gives one WorkerProcess, several a list."""
        started = [WorkerProcess(redis_server.url, home, data_dir, name=n, cpu_replicas=2, extra_env=FAST_RECOVERY)
                   for n in names]
        for w in started:
            w.start()
            workers.append(w)
        for w in started:
            w.wait_ready()
        return started[0] if len(started) == 1 else started

    class Stack:
        pass

    s = Stack()
    s.redis, s.home, s.start = redis_server, home, start
    s.client = Client(redis_server.url)
    yield s
    for w in workers:
        w.kill()


def test_a_running_job_keeps_its_message_from_being_redelivered(stack):
    """The lease heartbeat refreshes the job's message in kombu's unacked index (score = when
    it was taken): without that, Redis would hand a job running longer than the visibility
    timeout to another worker, which drops it as a duplicate, and the job is lost if its
    worker then dies."""
    stack.start("w1")
    job = stack.client.submit_train(job_request("fault0", epochs=6))
    r = stack.redis.client()
    wait_for(lambda: r.zcard("unacked_index") == 1 and r.exists(lease_key(job)), 120, "the job to start")
    (_, taken), = r.zrange("unacked_index", 0, -1, withscores=True)
    wait_for(lambda: any(score > taken + 1 for _, score in r.zrange("unacked_index", 0, -1, withscores=True)),
             30, "the heartbeat to refresh the job's message")
    assert stack.client.wait(job, timeout=300)["state"] == "SUCCESS"
    assert r.zcard("unacked_index") == 0  # acked at the end


def test_killed_worker_job_finishes_on_another_from_its_backup(stack):
    w1, w2 = stack.start("w1", "w2")
    job = stack.client.submit_train(job_request("fault1"))
    r = stack.redis.client()
    wait_for(lambda: backed_up_epochs(stack.home / "jobs" / job) >= 1, 240, "the first epoch's backup")
    before = history(stack.home, job)
    victim, survivor = (w1, w2) if holder_pid(r, job) == w1.proc.pid else (w2, w1)
    victim.kill()
    res = stack.client.wait(job, timeout=300)
    after = res["history"]
    assert res["state"] == "SUCCESS" and res["resumed"] is True
    assert [e["epoch"] for e in after] == [1, 2, 3]
    assert after[: len(before)] == before, "epochs finished before the kill were not re-run"
    assert after[len(before)].get("resumed") is True
    assert [m["version"] for m in list_models(r) if m["name"] == "fault1"] == [1], "one result, one model"


def test_both_workers_killed_then_one_restarted(stack):
    w1, w2 = stack.start("w1", "w2")
    job = stack.client.submit_train(job_request("fault2"))
    wait_for(lambda: backed_up_epochs(stack.home / "jobs" / job) >= 1, 240, "the first epoch's backup")
    before = history(stack.home, job)
    w1.kill()
    w2.kill()
    stack.start("w3")
    res = stack.client.wait(job, timeout=300)
    assert res["state"] == "SUCCESS" and res["resumed"] is True
    assert res["history"][: len(before)] == before


def test_redis_restart_loses_nothing_and_wait_survives(stack):
    stack.start("w1")
    running = stack.client.submit_train(job_request("fault3", epochs=2, train_size=3000))
    queued = [stack.client.submit_train(job_request("fault3", epochs=1, train_size=500)) for _ in range(2)]
    env = dict(os.environ)
    waiter = subprocess.Popen([sys.executable, "-m", "digitq.client", "wait", running, "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (stack.client.status(running).progress or {}).get("phase") == "train", 240, "training")
    stack.redis.kill()
    time.sleep(2)
    stack.redis.start()  # same port, same append-only file
    out, err = waiter.communicate(timeout=400)
    assert waiter.returncode == 0, err
    assert json.loads(out)["state"] == "SUCCESS"
    for job in queued:
        assert stack.client.wait(job, timeout=300)["state"] == "SUCCESS"
    r = stack.redis.client()
    assert sorted(m["version"] for m in list_models(r) if m["name"] == "fault3") == [1, 2, 3]


def test_a_job_delivered_twice_trains_once(stack):
    w1, w2 = stack.start("w1", "w2")
    req = job_request("fault4", epochs=2, train_size=3000).to_dict()
    job_id = "duplicate-job-1"
    stack.client.record_job(job_id, "train", "fault4", req)
    stack.client.app.send_task(TRAIN_TASK, args=[req], task_id=job_id, queue="train")
    stack.client.app.send_task(TRAIN_TASK, args=[req], task_id=job_id, queue="train")  # the same job again
    res = stack.client.wait(job_id, timeout=300)
    assert res["state"] == "SUCCESS"
    logs = w1.log() + w2.log()
    assert "dropping this duplicate delivery" in logs
    assert [e["epoch"] for e in res["history"]] == [1, 2]
    # Delivered once more after it finished: the stored result, no training.
    stack.client.app.send_task(TRAIN_TASK, args=[req], task_id=job_id, queue="train")
    wait_for(lambda: "already finished; returning its stored result" in w1.log() + w2.log(), 60, "the redelivery")
    r = stack.redis.client()
    assert [m["version"] for m in list_models(r) if m["name"] == "fault4"] == [1]


def test_cancelled_job_never_comes_back(stack):
    w1 = stack.start("w1")
    job = stack.client.submit_train(job_request("fault5", epochs=20, train_size=20000))
    wait_for(lambda: (stack.client.status(job).progress or {}).get("phase") == "train", 240, "training")
    os.killpg(w1.proc.pid, signal.SIGSTOP)  # frozen: it cannot notice the cancel...
    assert run_cli(["cancel", job], dict(os.environ)).returncode == 0
    w1.kill()  # ...and dies with the message still un-acked
    n = len(history(stack.home, job))
    # A worker started after the cancel never heard Celery's revoke broadcast: only the flag in
    # Redis stops it. After the visibility timeout the message is redelivered to it, and refused...
    w2 = stack.start("w2")
    wait_for(lambda: f"job {job} cancelled" in w2.log(), 120, "w2 to refuse the redelivered job")
    assert stack.client.status(job).state == "REVOKED"
    # ...without training it: no lease taken, no epoch added, one start in the job's log.
    r = stack.redis.client()
    assert not r.exists(lease_key(job))
    assert len(history(stack.home, job)) == n, "the cancelled job was trained again"
    assert len(training_starts(r, job)) == 1
    nxt = stack.client.submit_train(job_request("fault5b", epochs=1, train_size=500))
    assert stack.client.wait(nxt, timeout=200)["state"] == "SUCCESS"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_shared_volume_fails_the_job_and_the_worker_goes_on(stack):
    w1 = stack.start("w1")
    job_id = "full-volume-job"
    folder = stack.home / "jobs" / job_id
    folder.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(folder)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        req = job_request("fault6", epochs=4, train_size=3000).to_dict()
        stack.client.record_job(job_id, "train", "fault6", req)
        stack.client.app.send_task(TRAIN_TASK, args=[req], task_id=job_id, queue="train")
        wait_for(lambda: len(history(stack.home, job_id)) >= 1, 240, "the first epoch")
        subprocess.run(["dd", "if=/dev/zero", f"of={folder}/filler", "bs=1M", "count=30"], capture_output=True)
        with pytest.raises(Exception) as exc:
            stack.client.wait(job_id, timeout=300)
        assert "No space left on device" in str(exc.value)
        assert w1.proc.poll() is None, "the worker is still up"
        nxt = stack.client.submit_train(job_request("fault6b", epochs=1, train_size=500))
        assert stack.client.wait(nxt, timeout=200)["state"] == "SUCCESS"
    finally:
        subprocess.run(["umount", "-l", str(folder)])
