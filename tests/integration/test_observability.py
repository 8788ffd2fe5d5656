"""digitq workers / logs / tensorboard and the worker's Prometheus metrics, against a real worker."""

import json
import urllib.request

import pytest

from digitq.client.api import Client
from tests.helpers import wait_for
from tests.processes import run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SMALL = ["--epochs", "2", "--train-size", "2000", "--validation-size", "200", "--test-size", "200", "--batch-size", "32"]


def test_workers_lists_the_live_worker_with_its_devices(shared_worker, client_env):
    rows = json.loads(run_cli(["workers", "--json"], client_env).stdout)
    me = [w for w in rows if w["node"] == "w1@test"]
    assert me and me[0]["queues"] == ["train", "predict"] and me[0]["replicas"] == 2
    assert me[0]["device_type"] == "CPU" and me[0]["tensorflow"]


def test_logs_follow_streams_a_job_and_workers_shows_it_running(shared_worker, client_env):
    job = run_cli(["submit-train", *SMALL, "--name", "obs"], client_env).stdout.strip()

    def running():
        rows = json.loads(run_cli(["workers", "--json"], client_env).stdout)
        return [w for w in rows if (w.get("current_job") or {}).get("job_id") == job]

    wait_for(running, 120, "the worker to announce the job it runs", every=0.5)
    proc = run_cli(["logs", job, "--follow"], client_env, timeout=300)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert any("epoch 1:" in line for line in lines) and any("epoch 2:" in line for line in lines)
    assert any("test accuracy" in line for line in lines)
    assert run_cli(["logs", job], client_env).stdout.splitlines() == lines
    tb = run_cli(["tensorboard", job], client_env).stdout.strip()
    assert tb.startswith("tensorboard --logdir ") and tb.split()[2].endswith(f"{job}/tensorboard")


def _metric(body: str, sample: str) -> float:
    """The value of one sample line (`name{labels}`) of a Prometheus text page, 0 when absent."""
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_prometheus_metrics(shared_worker, client_env):
    """The page lists every metric, and the job counter counts a job this test runs itself."""
    port = shared_worker.extra_env["DIGITQ_METRICS_PORT"]

    def page() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

    done = 'digitq_jobs_total{state="SUCCESS",task="digitq.train"}'
    before = _metric(page(), done)
    job = run_cli(["submit-train", "--epochs", "1", "--train-size", "500", "--validation-size", "100",
                   "--test-size", "100", "--batch-size", "32", "--name", "metrics"], client_env).stdout.strip()
    Client(client_env["DIGITQ_BROKER_URL"]).wait(job, timeout=300)
    # The counter is bumped as the task ends, a moment after its result is stored.
    body = wait_for(lambda: (lambda b: b if _metric(b, done) == before + 1 else None)(page()), 30,
                    "the job counter to count the job")
    for name in ("digitq_jobs_total", "digitq_epoch_seconds_bucket", "digitq_train_images_per_second",
                 'digitq_queue_depth{queue="train"}', "digitq_predict_images_total"):
        assert name in body, name


def test_logs_of_an_unknown_job_is_one_line(client_env):
    proc = run_cli(["logs", "nosuchjob"], client_env)
    assert proc.returncode != 0 and proc.stderr.startswith("error: no job nosuchjob")
