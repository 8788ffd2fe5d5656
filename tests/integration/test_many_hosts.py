"""Several worker "hosts" that share only the Redis address and a shared directory: jobs run
exactly once, spread over the hosts, and a host killed mid-job loses nothing.

The hosts are separate processes with their own node names (no network namespaces: the
workers reach Redis on loopback, as workers on other machines reach it over the network).
"""

import collections
import json
import os

import pytest

from digitq.client.api import Client
from digitq.common.names import lease_key
from digitq.common.schemas import TrainRequest
from tests.helpers import backed_up_epochs, training_starts, wait_for
from tests.processes import WorkerProcess, run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ENV = {"DIGITQ_VISIBILITY_TIMEOUT": "15", "DIGITQ_LEASE_SECONDS": "5"}


def small(name, epochs=1, train_size=1500):
    return TrainRequest(name=name, epochs=epochs, train_size=train_size, validation_size=200, test_size=200,
                        batch_size=32)


def test_jobs_spread_over_hosts_run_once_and_survive_a_host(redis_server, tmp_path, data_dir, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    for k, v in {**ENV, "DIGITQ_HOME": str(shared), "DIGITQ_BROKER_URL": redis_server.url}.items():
        monkeypatch.setenv(k, v)
    hosts = [WorkerProcess(redis_server.url, shared, data_dir, name=f"host{i}", cpu_replicas=1, extra_env=ENV)
             for i in range(3)]
    try:
        for h in hosts:
            h.start()
        for h in hosts:
            h.wait_ready()
        client = Client(redis_server.url)
        jobs = [client.submit_train(small("spread")) for _ in range(6)]
        results = [client.wait(j, timeout=400) for j in jobs]
        r = redis_server.client()
        for j, res in zip(jobs, results):
            assert res["state"] == "SUCCESS"
            starts = training_starts(r, j)
            assert len(starts) == 1, f"job {j} trained {len(starts)} times"
        by_host = collections.Counter(res["worker"].rsplit(":", 1)[1] for res in results)
        assert len(by_host) >= 2, f"all jobs ran on one host: {by_host}"
        assert sorted(m["version"] for m in json.loads(run_cli(["models", "list", "--json"], dict(os.environ)).stdout)
                      if m["name"] == "spread") == [1, 2, 3, 4, 5, 6]

        # Predictions go through the same hosts: evaluate the first model.
        ev = json.loads(run_cli(["evaluate", "--model", "spread:1", "--test-size", "300", "--json"],
                                dict(os.environ)).stdout)
        assert ev["images"] == 300 and ev["accuracy"] > 0.5

        # A host dies mid-job: its job finishes on another host from its backup.
        long_job = client.submit_train(small("survivor", epochs=3, train_size=3000))
        wait_for(lambda: backed_up_epochs(shared / "jobs" / long_job) >= 1, 240, "the first epoch's backup")
        holder = int(r.get(lease_key(long_job)).decode().rsplit(":", 1)[1])
        victim = next(h for h in hosts if h.proc.pid == holder)
        victim.kill()
        res = client.wait(long_job, timeout=300)
        assert res["state"] == "SUCCESS" and res["resumed"] is True
        assert int(res["worker"].rsplit(":", 1)[1]) != holder
    finally:
        for h in hosts:
            h.kill()
