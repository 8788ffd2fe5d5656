"""Backups and hand-back with real processes (issue 16, items 3 and 4): SIGTERM a training
worker, damage its backups (kill -9 at random moments: test_backups_kill9.py, a file of its own
so that pytest-xdist runs it beside this one). Each guarantee (README "Delivery, resume and
faults") is in a test's docstring; times measured are printed (`-s`).

Short settings: visibility 10 s, lease 4 s; a tiny MLP on a few thousand MNIST digits. The
workers of this module are shared by its first two tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time

import pytest

from digitq.client.api import Client
from digitq.common.names import lease_key
from digitq.common.registry import list_models
from digitq.common.schemas import TrainRequest
from tests.helpers import wait_for
from tests.processes import RedisServer, WorkerProcess

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SHORT = {"DIGITQ_VISIBILITY_TIMEOUT": "10", "DIGITQ_LEASE_SECONDS": "4"}
RESUMED_RE = re.compile(r"resuming from backup (gen-\d+) at epoch (\d+) batch (\d+) of (\d+)")


def small_job(name: str, epochs: int, train_size: int, **kw) -> TrainRequest:
    return TrainRequest(name=name, arch="mlp", epochs=epochs, train_size=train_size, validation_size=200,
                        test_size=300, batch_size=32, **kw)


def holder_pid(r, job_id) -> int | None:
    v = r.get(lease_key(job_id))
    return int(v.decode().rsplit(":", 1)[1]) if v else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory, data_dir):
    """A redis-server and four workers (1 CPU replica each), all on short settings: the first
    test stops three of them."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not on PATH")
    root = tmp_path_factory.mktemp("backups")
    server = RedisServer(root / "redis")
    server.start()
    home = root / "home"
    saved = {k: os.environ.get(k) for k in (*SHORT, "DIGITQ_HOME", "DIGITQ_BROKER_URL")}
    os.environ.update(SHORT, DIGITQ_HOME=str(home), DIGITQ_BROKER_URL=server.url)
    workers = [WorkerProcess(server.url, home, data_dir, name=f"w{i}", extra_env=SHORT) for i in (1, 2, 3, 4)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.wait_ready(180)

        class Stack:
            pass

        s = Stack()
        s.redis, s.home, s.workers, s.client = server, home, workers, Client(server.url)
        yield s
    finally:
        for w in workers:
            w.kill()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def worker_of(stack, pid):
    found = [w for w in stack.workers if w.proc is not None and w.proc.pid == pid and w.proc.poll() is None]
    assert found, f"no live worker holds the job (lease holder pid {pid}): it ended or changed hands"
    return found[0]


def test_sigterm_hands_the_job_back_at_once_and_another_worker_resumes_at_the_signal(stack):
    """SIGTERM (docker stop) to a worker training a job, twice, then Ctrl-C: each time it saves a
    backup at the next batch, puts the job back at the head of the queue and exits; another
    worker resumes within 30 s from that backup, not an earlier one: no batch reported before
    the signal is trained again. The job then finishes once, with every epoch in its history."""
    client, r = stack.client, stack.redis.client()
    # 20 epochs of a small MLP: a few seconds per round on a fast CPU, so the job is still training
    # at the third signal (with 8 it could end during the second of training a round waits for).
    job = client.submit_train(small_job("handback", epochs=20, train_size=3000))
    measured, victims = [], []
    for round_ in range(3):
        wait_for(lambda: len([x for x in client.logs(job) if RESUMED_RE.search(x)]) == round_, 120,
                 "the job to resume")
        wait_for(lambda: (client.status(job).progress or {}).get("phase") == "train" and holder_pid(r, job), 120,
                 "training")
        time.sleep(1.0)  # a second of training on this worker
        victim = worker_of(stack, holder_pid(r, job))
        seen = client.status(job).progress
        steps = seen["batches"]
        seen_at = (seen["epoch"] - 1) * steps + seen["batch"]
        t0 = time.monotonic()
        if round_ < 2:
            os.kill(victim.proc.pid, signal.SIGTERM)  # docker stop, digitq local down
        else:
            os.killpg(victim.proc.pid, signal.SIGINT)  # Ctrl-C in the terminal of `digitq worker`
        lines = exit_s = resumed_s = None
        while time.monotonic() - t0 < 30 and (lines is None or exit_s is None):  # both timed from the signal
            if exit_s is None and victim.proc.poll() is not None:
                exit_s = time.monotonic() - t0
            if lines is None and (found := [m for x in client.logs(job) if (m := RESUMED_RE.search(x))][round_:]):
                lines, resumed_s = found, time.monotonic() - t0
            time.sleep(0.05)
        assert lines, "no other worker resumed the job within 30 s of the signal"
        assert exit_s is not None, "the stopped worker did not exit within 30 s"
        _, epoch, batch, of = lines[0].groups()
        resumed_at = (int(epoch) - 1) * int(of) + int(batch)
        assert resumed_at >= seen_at, f"resumed at batch {resumed_at} of the job, {seen_at} were reported before"
        assert victim.proc.returncode == 0, victim.log()[-2000:]
        assert "handing it back to the queue" in victim.log()
        assert holder_pid(r, job) != victim.proc.pid
        measured.append((round(resumed_s, 1), round(exit_s, 1), resumed_at - seen_at))
        victims.append(victim)
    print(f"\nSIGTERM -> resumed on another worker (s), -> old worker exited (s), batches past the last report: "
          f"{measured}")
    victims[0].start()  # a spare for the next test
    res = client.wait(job, timeout=300)
    assert res["state"] == "SUCCESS" and res["resumed"] is True
    assert [e["epoch"] for e in res["history"]] == list(range(1, 21))
    assert res["test_accuracy"] > 0.85
    assert [m["version"] for m in list_models(r) if m["name"] == "handback"] == [1]
    assert not (stack.home / "jobs" / job / "backup").exists()


def test_unusable_backups_are_named_in_the_jobs_log_and_training_starts_over(stack):
    """The newest backup half-written (truncated), the ones before it with their weights
    deleted but their state kept, then the worker killed: the next delivery names both as unusable in
    the job's log (`digitq logs`) and starts over from epoch 1, never from random weights
    under an old epoch count and never a permanent failure; the job finishes with a proper
    accuracy and a history of its epochs once each."""
    client, r = stack.client, stack.redis.client()
    job = client.submit_train(small_job("damaged", epochs=3, train_size=2000, save_every_batches=10))
    folder = stack.home / "jobs" / job
    wait_for(lambda: len(json.loads((folder / "history.json").read_text())) >= 1
             if (folder / "history.json").exists() else False, 180, "the first epoch")
    victim = worker_of(stack, holder_pid(r, job))
    for w in stack.workers:
        if w is not victim and w.proc.poll() is None:
            w.wait_ready(180)
    os.kill(victim.proc.pid, signal.SIGSTOP)  # no more backups while we damage them
    gens = sorted((folder / "backup").glob("gen-*"), reverse=True)  # 2, or 3 if stopped amid a save
    assert len(gens) >= 2, gens
    weights = gens[0] / "weights.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for gen in gens[1:]:
        (gen / "weights.weights.h5").unlink()
    t0 = time.monotonic()
    victim.kill()
    wait_for(lambda: any("starting over" in x for x in client.logs(job)), 60, "the next delivery")
    takeover_s = time.monotonic() - t0
    res = client.wait(job, timeout=300)
    log = "\n".join(client.logs(job))
    assert f"backup {gens[0]} is unusable (weights.weights.h5 does not match its checksum" in log
    for gen in gens[1:]:
        assert f"backup {gen} is unusable (weights.weights.h5 is missing)" in log
    assert res["state"] == "SUCCESS" and res["resumed"] is False
    assert [e["epoch"] for e in res["history"]] == [1, 2, 3]
    assert not any(e.get("resumed") for e in res["history"])
    assert res["test_accuracy"] > 0.85
    assert [m["version"] for m in list_models(r) if m["name"] == "damaged"] == [1]
    print(f"\nkill -9 with damaged backups -> started over on another worker after {takeover_s:.1f} s "
          f"(visibility timeout {SHORT['DIGITQ_VISIBILITY_TIMEOUT']} s)")


def test_an_idle_worker_exits_promptly_on_sigterm(stack):
    """An idle worker stops at once: nothing to hand back."""
    idle = [w for w in stack.workers if w.proc is not None and w.proc.poll() is None]
    assert idle
    for w in idle:
        w.wait_ready(180)
    t0 = time.monotonic()
    for w in idle:
        os.kill(w.proc.pid, signal.SIGTERM)
    for w in idle:
        w.proc.wait(15)
        assert w.proc.returncode == 0
    print(f"\nSIGTERM -> {len(idle)} idle worker(s) exited in {time.monotonic() - t0:.1f} s")
