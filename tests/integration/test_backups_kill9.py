"""kill -9 at random moments of `--save-every 1` training, 20 times in a row (issue 16, item 3):
backups are written atomically, so no kill leaves a job that cannot finish.

In a file of its own so that pytest-xdist (`--dist loadfile`) runs it beside test_backups.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.processes import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

KILL_LOOP = """
import json, os, random, signal, sys, time
from digitq.worker.devices import prefer_onednn
prefer_onednn()
import keras, tensorflow  # imported, not initialised: each forked run starts TensorFlow itself
import redis
from digitq.common.registry import list_models
from digitq.common.schemas import TrainRequest
from digitq.common.settings import load_settings
from digitq.worker import data, train, train_job

url, kills_wanted, n_jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
settings = load_settings()
data.load_mnist(settings)  # read once here: the forked runs inherit it
r = redis.Redis.from_url(url)
rng = random.Random(0)
req = TrainRequest(arch="mlp", epochs=2, train_size=500, validation_size=100, test_size=200, batch_size=32,
                   dense_units=64, learning_rate=0.01, save_every_batches=1)
jobs = {f"killloop-{i}": dict(req.to_dict(), name=f"killloop-{i}") for i in range(n_jobs)}

def gens(job):
    d = settings.jobs_dir / job / "backup"
    return sorted(p.name for p in d.glob("gen-*")) if d.is_dir() else []

kills = torn = runs = 0
t0 = time.time()
i = 0
while i < len(jobs):
    job, payload = list(jobs.items())[i]
    while not (settings.jobs_dir / job / "result.json").exists():
        kill = kills < kills_wanted * min(i + 1, n_jobs) // n_jobs
        before = gens(job)
        runs += 1
        pid = os.fork()
        if pid == 0:  # one delivery of the job, as the worker runs it
            try:
                train_job.run_train_job(job, payload, settings, r, owner="kill-loop")
                os._exit(0)
            except BaseException as exc:
                print(f"run failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                os._exit(3)
        reaped = 0
        if kill:  # once training made progress (a new backup), kill at a random moment
            deadline = time.monotonic() + 120
            while gens(job) == before and time.monotonic() < deadline:
                reaped, status = os.waitpid(pid, os.WNOHANG)
                if reaped:
                    break
                time.sleep(0.005)
            if not reaped:
                time.sleep(rng.uniform(0, 0.3))
                os.kill(pid, signal.SIGKILL)  # a zombie until reaped below: the pid cannot be reused
        if not reaped:
            _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == -signal.SIGKILL:
            kills += 1
            torn += bool(list((settings.jobs_dir / job / "backup").glob(".tmp-*")))
        elif code != 0:
            sys.exit(f"a run of {job} failed (exit {code}): a permanent failure")
    i += 1
    if i == len(jobs) and kills < kills_wanted and i < 2 * n_jobs:  # the jobs ended before every kill landed
        jobs[f"killloop-{i}"] = dict(req.to_dict(), name=f"killloop-{i}")
result = {job: json.loads((settings.jobs_dir / job / "result.json").read_text()) for job in jobs}
print(json.dumps({
    "kills": kills, "torn": torn, "runs": runs, "seconds": round(time.time() - t0, 1),
    "versions": {job: [m["version"] for m in list_models(r) if m["name"] == job] for job in jobs},
    "epochs": {job: [e["epoch"] for e in res["history"]] for job, res in result.items()},
    "accuracy": {job: res["test_accuracy"] for job, res in result.items()},
}))
"""


def test_kill_9_at_random_moments_of_save_every_1_training_never_breaks_a_job(tmp_path, data_dir):
    """20 kill -9 in a row at random moments of `--save-every 1` training (a backup after every
    batch, so many kills land mid-write: counted as `torn`), spread over 3 jobs (more, up to 6,
    when a job ends before its share of kills landed), each run a
    real delivery (run_train_job: lease, backups, registry): every job finishes, with one model
    version each and each epoch once in its history. The runs are forked from one process that
    imported TensorFlow once, so 20 kills fit in about a minute."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        env = dict(os.environ, DIGITQ_HOME=str(tmp_path / "home"), DIGITQ_DATA_DIR=str(data_dir),
                   DIGITQ_BROKER_URL=server.url, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_LOOP), server.url, "20", "3"], env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nkill loop: {out}")
    assert out["kills"] >= 20
    jobs = sorted(out["versions"])
    assert 3 <= len(jobs) <= 6 and jobs[:3] == [f"killloop-{i}" for i in range(3)]
    assert out["versions"] == {job: [1] for job in jobs}
    assert out["epochs"] == {job: [1, 2] for job in jobs}
