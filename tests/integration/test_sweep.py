"""Sweeps with real workers on a real redis-server: pruning, a client that exits, a worker killed
mid-trial, fair share with a job submitted meanwhile, cancel, and the sweep's report.

Trials are tiny MLPs (1,500 images, 3 epochs) so that 12 of them take well under a minute on two
workers; timeouts are short (visibility 15 s, lease 5 s) so that a killed worker's trial comes back
within the test.
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
from digitq.common.names import lease_key
from digitq.common.registry import list_models, resolve_model
from digitq.common.schemas import TrainRequest
from digitq.common.sweep import load_record, load_trials
from tests.helpers import assert_one_line_error, ok, wait_for
from tests.processes import RedisServer, WorkerProcess, run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]

FAST_RECOVERY = {"DIGITQ_VISIBILITY_TIMEOUT": "15", "DIGITQ_LEASE_SECONDS": "5"}

RECIPE = ["--arch", "mlp", "--epochs", "3", "--train-size", "1500", "--validation-size", "300", "--test-size", "200",
          "-p", "lr=loguniform:1e-4:3e-2", "-p", "dense=choice:32,64,128", "-p", "bs=choice:32,64"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, data_dir):
    """A redis-server and two workers (1 CPU replica each) for the module; more start on demand."""
    import shutil

    if not shutil.which("redis-server"):
        pytest.skip("redis-server not on PATH")
    base = tmp_path_factory.mktemp("sweep")
    server = RedisServer(base / "redis")
    server.start()
    home = base / "home"
    home.mkdir()
    workers = []

    def start(*names):
        started = [WorkerProcess(server.url, home, data_dir, name=n, cpu_replicas=1, extra_env=FAST_RECOVERY)
                   for n in names]
        for w in started:
            w.start()
            workers.append(w)
        return started

    class Stack:
        pass

    s = Stack()
    s.redis, s.home, s.start, s.workers = server, home, start, workers
    s.env = dict(os.environ, DIGITQ_BROKER_URL=server.url, DIGITQ_HOME=str(home), DIGITQ_DATA_DIR=str(data_dir),
                 **FAST_RECOVERY)
    s.env.pop("DIGITQ_RESULT_BACKEND", None)
    s.client = Client(server.url)
    for w in start("w1", "w2"):
        w.wait_ready()
    yield s
    for w in workers:
        w.kill()
    server.stop()


def _history(home, job_id) -> list:
    try:
        return json.loads((home / "jobs" / job_id / "history.json").read_text())
    except (OSError, ValueError):
        return []


def _trials(stack, sweep_id) -> dict:
    return load_trials(stack.redis.client(), sweep_id)


def test_cancel_stops_running_trials_and_queued_ones_never_run(stack):
    """Cancel: the running trials stop within seconds (their workers read the sweep's cancel flag
    about once a second), the queued one never starts, no further trial is asked, and the sweep
    (and `sweep wait`) says cancelled."""
    proc = ok(run_cli(["sweep", "--detach", "--trials", "6", "--parallel", "3", "--name", "swcancel", "--pruner", "none",
                       *RECIPE[:2], "--epochs", "200", *RECIPE[4:]], stack.env))
    sweep_id = proc.stdout.strip()
    wait_for(lambda: sum(t.get("state") == "running" and len(t.get("curve") or []) >= 1
                         for t in _trials(stack, sweep_id).values()) == 2, 120, "two trials past their first epoch")
    queued = [t for t in _trials(stack, sweep_id).values() if t["state"] == "queued"]
    assert len(queued) == 1, _trials(stack, sweep_id)  # P = 3 on 2 workers: one waits in the queue
    asked = time.monotonic()
    ok(run_cli(["sweep", "cancel", sweep_id], stack.env))
    wait_for(lambda: all(t["state"] == "cancelled" for t in _trials(stack, sweep_id).values()), 30,
             "every trial to say cancelled")
    stopped_after = time.monotonic() - asked
    trials = _trials(stack, sweep_id)
    assert sorted(trials) == [1, 2, 3], "no trial asked after the cancel"
    for t in trials.values():
        assert len(_history(stack.home, t["job_id"])) < 200
    assert not (stack.home / "jobs" / queued[0]["job_id"]).exists(), "the queued trial never ran"
    assert stack.client.status(queued[0]["job_id"]).state == "REVOKED"
    wait_for(lambda: all(stack.client.status(t["job_id"]).state == "REVOKED" for t in trials.values()), 30,
             "the trial jobs to end as cancelled")
    assert load_record(stack.redis.client(), sweep_id)["state"] == "cancelled"
    assert_one_line_error(run_cli(["sweep", "wait", sweep_id], stack.env), "cancelled", code=1)
    assert stopped_after < 30
    assert not [m for m in list_models(stack.redis.client()) if m["name"] == "swcancel"]


SWEEP = {}


def test_sweep_prunes_survives_client_exit_and_worker_kill_and_shares_workers(stack):
    """12 trials, 2 at once, ASHA: the submitting client is killed after the first trial ends and
    `digitq sweep wait` picks the sweep up; a single job submitted meanwhile starts before any
    trial queued after it (fair share); a worker killed mid-trial loses no trial; pruned trials
    stop at the epoch of their pruning decision; the best is registered once, with the sweep."""
    r = stack.redis.client()
    client_proc = subprocess.Popen([sys.executable, "-m", "digitq.client", "sweep", "--trials", "12", "--parallel", "2",
                                    "--name", "swbest", *RECIPE], env=stack.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
    first = client_proc.stderr.readline()  # "submitted SWEEP_ID"
    assert first.startswith("submitted sweep-"), first + client_proc.stderr.read()
    sweep_id = first.split()[1]
    wait_for(lambda: any(t["state"] in ("complete", "pruned") for t in _trials(stack, sweep_id).values()), 180,
             "the first trial to end")
    client_proc.send_signal(signal.SIGKILL)  # the client goes away; the sweep goes on
    client_proc.wait()

    def both_busy_and_more_to_come():  # the next worker to finish must take the job, not one of these
        trials = _trials(stack, sweep_id).values()
        return (sum(t["state"] == "running" for t in trials) == 2
                and 12 - sum(t.get("started") is not None for t in trials) >= 4)

    wait_for(both_busy_and_more_to_come, 120, "both workers on a trial, four or more trials still to start")
    single_submitted = time.time()
    single = stack.client.submit_train(TrainRequest(arch="mlp", epochs=1, train_size=1000, validation_size=200,
                                                    test_size=200, name="swsingle"))

    def single_taken():  # when a worker took the job (its announcement's current job, from Celery's prerun)
        for key in r.scan_iter(match="digitq:worker:*"):
            job = (json.loads(r.get(key) or b"{}").get("current_job") or {})
            if job.get("job_id") == single:
                return job["since"]
        return None

    single_started = wait_for(single_taken, 120, "the single job to start", every=0.05)

    def running_trial():
        for t in _trials(stack, sweep_id).values():
            holder = r.get(lease_key(t["job_id"])) if t["state"] == "running" else None
            if holder:
                return t, int(holder.decode().rsplit(":", 1)[1])
        return None

    wait_for(lambda: sum(t["state"] in ("complete", "pruned") for t in _trials(stack, sweep_id).values()) >= 8, 240,
             "8 trials to end")  # late in the sweep: the survivor alone has only the last few to run
    killed_trial, pid = wait_for(running_trial, 120, "a running trial")
    victim = next(w for w in stack.workers if w.proc.pid == pid)
    killed_at = time.time()
    victim.kill()  # its trial comes back to the queue after the visibility timeout, for the survivor

    proc = ok(run_cli(["sweep", "wait", sweep_id, "--json"], stack.env, timeout=400))
    st = json.loads(proc.stdout)
    trials = {t["slot"]: t for t in st["trials"]}
    SWEEP.update(id=sweep_id, status=st)

    assert st["state"] == "complete" and sorted(trials) == list(range(1, 13)), ("every trial ran", trials)
    assert all(t["state"] in ("complete", "pruned") for t in trials.values()), trials
    again = trials[killed_trial["slot"]]
    assert again["ended"] > killed_at, ("the killed worker's trial ended after the kill", again)
    assert again["deliveries"] >= 2 or (stack.home / "jobs" / again["job_id"] / "result.json").stat().st_mtime < killed_at, (
        "run again from its backup, unless it had just stored its result", again)
    assert stack.client.wait(killed_trial["job_id"], timeout=60)["state"] == "SUCCESS"

    pruned = [t for t in trials.values() if t["state"] == "pruned"]
    assert pruned, "ASHA pruned no trial"
    for t in pruned:  # stopped at the epoch whose report pruned it (not a later one)
        assert len(_history(stack.home, t["job_id"])) == t["pruned_at"] == t["epoch"] < 3, t
    for t in trials.values():
        if t["state"] == "complete":
            assert len(_history(stack.home, t["job_id"])) == 3, t

    # fair share: the first worker to finish its trial took the single job. A trial's `started` is
    # stamped after its worker took it and asked Optuna, so it errs late: only a trial the other
    # worker took in the same instant may look as if it started in between; with every trial
    # queued at once, the ten waiting would all have gone first.
    between = [t["slot"] for t in trials.values() if single_submitted < t["started"] < single_started]
    assert len(between) <= 1, f"trials started after the single job was submitted, before it: {between}"
    took = sorted(t["ended"] - t["started"] for t in trials.values())
    print(f"fair share: the single job waited {single_started - single_submitted:.1f} s for a worker; trials took "
          f"{took[0]:.1f}-{took[-1]:.1f} s (median {took[len(took) // 2]:.1f} s)")
    late = [t for t in trials.values() if t.get("queued", 0) > single_submitted and t["started"] < single_started]
    assert not late, f"trials queued after the single job started before it: {late}"

    best = max((t for t in trials.values() if t["state"] == "complete"), key=lambda t: (t["value"], -t["slot"]))
    assert st["best"]["slot"] == best["slot"] and st["model"] == "swbest:1", (st["best"], st["model"], trials)
    rec = resolve_model(r, "swbest:1")
    assert rec["sweep"]["id"] == sweep_id and rec["job_id"] == best["job_id"]
    assert rec["hyperparameters"]["dense_units"] == best["params"]["dense_units"]
    assert [m["version"] for m in list_models(r) if m["name"] == "swbest"] == [1], "trials register no versions"
    assert stack.client.wait(single, timeout=120)["state"] == "SUCCESS"


def test_report_of_a_sweep(stack, tmp_path):
    """`digitq report SWEEP`: the trials' validation curves, accuracy per searched option, a table."""
    if not SWEEP:
        pytest.skip("needs the sweep of the test above")
    out = tmp_path / "rep"
    res = json.loads(ok(run_cli(["report", SWEEP["id"], "-o", str(out), "--json"], stack.env, timeout=300)).stdout)
    assert sorted(res["files"]) == ["curves.png", "params.png", "summary.md"]
    for name in ("curves.png", "params.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (out / "summary.md").read_text()
    assert summary.count("\n| ") >= 12 + 7 and "swbest:1" in summary
    assert "learning_rate" in summary and "pruned at epoch" in summary
