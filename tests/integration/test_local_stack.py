"""The embedded default: no DIGITQ_BROKER_URL, so digitq starts a real redis-server and worker."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.processes import run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_submit_train_starts_the_embedded_stack(home):
    env = dict(os.environ, DIGITQ_CPU_REPLICAS="2")
    try:
        proc = run_cli(["submit-train", "--epochs", "1", "--train-size", "1000", "--validation-size", "200",
                        "--test-size", "300", "--json"], env, timeout=400)
        assert proc.returncode == 0, proc.stderr
        assert "started the embedded stack" in proc.stderr
        res = json.loads(proc.stdout)
        assert res["state"] == "SUCCESS" and res["replicas"] == 2

        st = json.loads(run_cli(["local", "status", "--json"], env).stdout)
        assert st["redis"]["running"] and st["worker"]["running"]
        local = home / "local"
        for secret in ("password", "broker.url"):
            assert stat.S_IMODE((local / secret).stat().st_mode) == 0o600
        url = (local / "broker.url").read_text()
        r = redis.Redis.from_url(url)
        assert r.config_get("bind")["bind"] == "127.0.0.1"
        assert r.config_get("appendonly")["appendonly"] == "yes"
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=int(url.rsplit(":", 1)[1].split("/")[0])).ping()

        # A second submit reuses the running stack.
        again = run_cli(["submit-train", "--epochs", "1", "--train-size", "500", "--validation-size", "100",
                         "--test-size", "100", "--json"], env, timeout=300)
        assert again.returncode == 0 and "started the embedded stack" not in again.stderr

        # The `digitq` script runs `python3`, this test `python`: one installation, no restart.
        pid = (local / "worker.pid").read_text()
        script = subprocess.run([str(Path(sys.executable).parent / "digitq"), "local", "up"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert script.returncode == 0 and "restarted" not in script.stdout + script.stderr, script.stderr
        assert (local / "worker.pid").read_text() == pid
        # A worker started from another installation (or digitq version) is replaced.
        (local / "worker.origin").write_text("/elsewhere/venv /elsewhere/digitq 0.0.1")
        up = run_cli(["local", "up"], env, timeout=180)
        assert up.returncode == 0, up.stderr
        assert (local / "worker.pid").read_text() != pid and "/elsewhere" not in (local / "worker.origin").read_text()
    finally:
        down = run_cli(["local", "down", "--json"], env)
    st = json.loads(down.stdout)
    assert not st["redis"]["running"] and not st["worker"]["running"]
