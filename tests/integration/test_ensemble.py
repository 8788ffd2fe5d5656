"""Ensembles fanned out over the workers (digitq.common.ensemble, digitq.worker.ensemble), with a
real redis-server and real worker processes training on small MNIST slices.

Promised (README "Guarantees"): `--ensemble K` is K member jobs on the queue, spread over the
workers, and exactly one model version once all have finished, whatever is redelivered or killed;
at most N members are queued or running at once, so a job submitted meanwhile gets the next free
worker. Short timeouts (visibility 10 s, lease 3 s) make a killed member come back within the test.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from digitq.client.api import Client
from digitq.common import ensemble
from digitq.common.errors import JobCancelled
from digitq.common.names import TRAIN_TASK, lease_key
from digitq.common.registry import list_models
from digitq.common.schemas import TrainRequest
from tests.helpers import backed_up_epochs, history, mnist_test, wait_for
from tests.processes import RedisServer, WorkerProcess, run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]

FAST_RECOVERY = {"DIGITQ_VISIBILITY_TIMEOUT": "10", "DIGITQ_LEASE_SECONDS": "3"}
TEST_SIZE = 300


def request(name: str, k: int, epochs: int = 1, train_size: int = 1000, arch: str = "cnn") -> TrainRequest:
    return TrainRequest(name=name, ensemble=k, epochs=epochs, train_size=train_size, validation_size=200,
                        test_size=TEST_SIZE, batch_size=32, arch=arch)


def versions(r, name: str) -> list[int]:
    return sorted(m["version"] for m in list_models(r) if m["name"] == name)


# --- the bookkeeping alone: one Lua script per step, on a real redis-server ---------------------------


def test_each_finish_counts_once_and_at_most_the_limit_is_in_flight(shared_redis):
    r = shared_redis.client()
    parent = "bookkeeping-1"
    ensemble.create(r, parent, request("bk", 4), parallel=2, ttl=60)
    assert ensemble.dispatch(r, parent, 2) == [0, 1]
    assert ensemble.dispatch(r, parent, 2) == [], "two in flight: nothing more"
    step = ensemble.member_done(r, parent, 0, 2)
    assert (step.done, step.first, step.send) == (1, True, [2])
    again = ensemble.member_done(r, parent, 0, 2)  # member 0 delivered again: counted once,
    assert (again.done, again.first, again.send) == (1, False, [2])  # what it queued is sent again
    assert ensemble.member_done(r, parent, 2, 2).send == [3]
    assert ensemble.member_done(r, parent, 1, 2).send == []
    assert ensemble.member_done(r, parent, 2, 2).send == [3], "again: what it queued is not finished yet"
    last = ensemble.member_done(r, parent, 3, 2)
    assert last.all_done and last.first and last.send == []
    assert ensemble.member_done(r, parent, 0, 2).send == [], "nothing it queued is unfinished"
    assert ensemble.member_done(r, parent, 3, 2).all_done
    assert int(r.hget(ensemble.record_key(parent), "done")) == 4

    other = "bookkeeping-2"
    ensemble.create(r, other, request("bk", 3), parallel=0, ttl=60)
    assert ensemble.dispatch(r, other, 1) == [0]
    ensemble.cancel(r, other)
    assert ensemble.member_done(r, other, 0, 1).send == [], "a cancelled ensemble queues nothing more"
    assert ensemble.parent_of(r, ensemble.member_id(other, 2)) == (other, 2)
    assert ensemble.parent_of(r, "not-a-member") is None


def test_a_failed_member_fails_the_ensemble_and_stops_the_others(redis_server, tmp_path, monkeypatch):
    """Called directly, on a redis-server no worker serves: member 2 of 3 fails -> the ensemble is FAILURE with its reason,
    the other members get their cancel flags, nothing more is queued; a member cancelled on its
    own cancels the ensemble."""
    from digitq.common.celery_app import make_celery
    from digitq.common.names import cancel_key
    from digitq.common.settings import load_settings
    from digitq.worker.ensemble import fail_ensemble, member_cancelled

    monkeypatch.setenv("DIGITQ_HOME", str(tmp_path))
    settings = load_settings()
    client, r = Client(redis_server.url, settings), redis_server.client()
    app = make_celery(settings, redis_server.url)
    failed = client.submit_train(request("fail-1", 3, arch="mlp"), parallel=1)
    fail_ensemble(failed, 1, "DataError: no MNIST", settings, r, app)
    st = client.status(failed)
    assert st.state == "FAILURE" and st.error == f"member 2/3 ({failed}-m1) failed: DataError: no MNIST", st.error
    assert [bool(r.exists(cancel_key(ensemble.member_id(failed, k)))) for k in range(3)] == [True, False, True]
    assert ensemble.member_done(r, failed, 0, 3).send == [], "nothing more is queued"

    alone = client.submit_train(request("fail-2", 2, arch="mlp"))
    member_cancelled(alone, 0, settings, r, app)
    assert client.status(alone).state == "REVOKED"
    assert r.exists(cancel_key(ensemble.member_id(alone, 1)))


# --- real workers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory, data_dir):
    """A redis-server of the module's own and two workers (one CPU replica each) on it."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not on PATH")
    base = tmp_path_factory.mktemp("ensemble")
    server = RedisServer(base / "redis")
    server.start()
    home = base / "home"
    workers = [WorkerProcess(server.url, home, data_dir, name=n, extra_env=FAST_RECOVERY) for n in ("w1", "w2")]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.wait_ready()
        client = Client(server.url)
        wait_for(lambda: ensemble.live_train_workers(client.redis) == 2, 30, "both workers to announce themselves")
        yield type("Stack", (), {"server": server, "home": home, "workers": workers, "client": client,
                                 "r": server.client()})
    finally:
        for w in workers:
            w.kill()
        server.stop()


def check_averaged(res: dict, home, data_dir) -> None:
    """The registered accuracy is that of the mean of the members' saved test probabilities."""
    probs = [np.load(home / "jobs" / m / "test_probs.npy") for m in res["member_jobs"]]
    labels = mnist_test(data_dir)[1][:TEST_SIZE]
    mean = np.mean(np.stack(probs).astype(np.float64), axis=0)
    assert res["test_accuracy"] == pytest.approx(float((mean.argmax(1) == labels).mean()), abs=1e-9)
    loss = float(-np.log(np.clip(mean[np.arange(len(labels)), labels], 1e-7, 1.0)).mean())
    assert res["test_loss"] == pytest.approx(loss, rel=1e-6), "the loss of the averaged probabilities"
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (labels.astype(int), mean.argmax(1)), 1)
    assert res["confusion"] == confusion.tolist()
    assert res["member_accuracies"] == pytest.approx([float((p.argmax(1) == labels).mean()) for p in probs], abs=1e-9)
    assert res["members"] == [str(home / "jobs" / m / "model.keras") for m in res["member_jobs"]]


def test_members_fan_out_and_a_job_submitted_meanwhile_gets_the_next_free_worker(stack, data_dir):
    """K=3 on 2 workers: two members run side by side, one on each worker, and no more are queued
    (fair share: at most the live workers' count). A job submitted meanwhile is queued before
    member 3, so it starts as soon as the first member finishes, not after the ensemble. One
    model is registered, scoring what the average of the members' probabilities scores."""
    client, r = stack.client, stack.r
    parent = client.submit_train(request("ens-a", 3, arch="mlp"))
    assert int(r.hget(ensemble.record_key(parent), "dispatched")) == 2
    single = client.submit_train(request("single-a", 1, arch="mlp"))
    seen = []
    res = client.wait(parent, on_progress=lambda st: seen.append(st.progress), timeout=300)
    assert client.wait(single, timeout=300)["state"] == "SUCCESS"

    assert res["state"] == "SUCCESS" and res["model"] == "ens-a:1"
    assert versions(r, "ens-a") == [1], "one model version; the members are not registered"
    assert res["member_jobs"] == [ensemble.member_id(parent, k) for k in range(3)]
    assert res["member_workers"][0] != res["member_workers"][1], "the first two members ran on both workers"
    assert any(p and p.get("ensemble") == 3 and p.get("running") for p in seen), seen[-3:]
    started = {j: (stack.home / "jobs" / j / "request.json").stat().st_mtime_ns for j in (single, res["member_jobs"][2])}
    assert started[single] < started[res["member_jobs"][2]], "the single job waited for the whole ensemble"
    check_averaged(res, stack.home, data_dir)
    rec = client.show_model("ens-a:1")
    assert rec["kind"] == "ensemble" and rec["members"] == res["members"]
    assert rec["test_accuracy"] == res["test_accuracy"]

    listed = json.loads(run_cli(["jobs", "--json"], dict(os.environ, DIGITQ_BROKER_URL=stack.server.url)).stdout)
    assert sorted(j["job_id"] for j in listed) == sorted([parent, single]), "the members are not listed"
    assert next(j for j in listed if j["job_id"] == parent)["model"] == "ens-a:1"


def test_cancelling_an_ensemble_stops_its_members_and_registers_nothing(stack):
    """`digitq cancel PARENT` while its members train: it is REVOKED at once, its running members
    stop within seconds, and no model is registered."""
    client, r = stack.client, stack.r
    parent = client.submit_train(request("ens-x", 2, epochs=50, train_size=3000, arch="mlp"))
    wait_for(lambda: (client.status(parent).progress or {}).get("phase") == "train", 120, "a member to train")
    env = dict(os.environ, DIGITQ_BROKER_URL=stack.server.url)
    proc = run_cli(["cancel", parent], env)
    assert proc.returncode == 0 and proc.stdout.strip() == f"cancelled {parent}", proc.stderr
    assert client.status(parent).state == "REVOKED"
    members = [ensemble.member_id(parent, k) for k in range(2)]
    wait_for(lambda: all(client.status(m).state == "REVOKED" for m in members), 60, "both members to stop")
    assert versions(r, "ens-x") == []
    with pytest.raises(JobCancelled):
        client.wait(parent, timeout=10)


KILLED_RECIPE = request("ens-c", 2, epochs=6, train_size=1500, arch="mlp")
"""Epochs of about a second: time to kill a member's worker after its first epoch and before its last."""


def test_a_member_whose_worker_is_killed_resumes_elsewhere_and_the_ensemble_registers_once(stack, data_dir):
    """kill -9 the worker of a member after its first epoch: the member is redelivered to the other
    worker and resumes from its backup; the ensemble completes once, with one model version, and a
    member delivered again afterwards changes nothing."""
    client, r = stack.client, stack.r
    parent = client.submit_train(KILLED_RECIPE)
    members = [ensemble.member_id(parent, k) for k in range(2)]
    victim_member = wait_for(lambda: next((m for m in members if backed_up_epochs(stack.home / "jobs" / m) >= 1), None), 240,
                             "a member's first epoch")
    before = history(stack.home, victim_member)
    assert len(before) < 6, "the member finished before it could be killed"
    holder = int(r.get(lease_key(victim_member)).decode().rsplit(":", 1)[1])
    victim = next(w for w in stack.workers if w.proc.pid == holder)
    victim.kill()

    res = client.wait(parent, timeout=300)
    assert res["state"] == "SUCCESS" and res["resumed"] is True
    assert versions(r, "ens-c") == [1]
    member = json.loads((stack.home / "jobs" / victim_member / "result.json").read_text())
    assert member["resumed"] is True and [e["epoch"] for e in member["history"]] == list(range(1, 7))
    assert member["history"][: len(before)] == before, "epochs finished before the kill were not re-run"
    assert len(set(res["member_workers"])) == 1, "the survivor finished both members"
    check_averaged(res, stack.home, data_dir)

    survivor = next(w for w in stack.workers if w is not victim)
    payload = ensemble.member_request(KILLED_RECIPE, 0).to_dict()
    client.app.send_task(TRAIN_TASK, args=[payload], task_id=members[0], queue="train")  # delivered once more
    wait_for(lambda: "finished (delivered again)" in survivor.log(), 60, "the redelivered member")
    assert versions(r, "ens-c") == [1] and client.wait(parent, timeout=10)["model"] == "ens-c:1"
    assert r.get("digitq:model:ens-c:next") == b"1", "no version number was drawn twice"
