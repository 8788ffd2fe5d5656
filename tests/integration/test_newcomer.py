"""Issue 17 ("the newcomer's list") where the fault needs real parts: a real redis-server that
wants a password, a closed port, and the embedded stack's worker restarted with the settings of
the command that queues work. The other rows are CLI tests in tests/unit/test_cli_newcomer.py."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers import assert_one_line_error
from tests.processes import free_port, run_cli

pytestmark = [pytest.mark.redis]


def _scans(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    out.mkdir()
    return scans, out


def test_a_broker_url_without_the_password_says_one_is_needed(shared_redis, tmp_path):
    """The server requires a password the URL lacks: not Redis's "HELLO must be called ..."."""
    env = dict(os.environ, DIGITQ_BROKER_URL=f"redis://127.0.0.1:{shared_redis.port}/0", DIGITQ_HOME=str(tmp_path))
    env.pop("DIGITQ_RESULT_BACKEND", None)
    assert_one_line_error(run_cli(["jobs"], env), f"the broker at redis://127.0.0.1:{shared_redis.port}/0 needs a password",
                          code=1)


@pytest.mark.parametrize("which", ["wrong password", "closed port"])
def test_a_broker_error_leaves_no_file_behind(shared_redis, tmp_path, which):
    """`predict DIR -o wp.csv` with a wrong password or a closed port: the error, and no
    `.wp.csv.partial` (or anything else) in the output folder."""
    port = shared_redis.port if which == "wrong password" else free_port()
    env = dict(os.environ, DIGITQ_BROKER_URL=f"redis://:wrong@127.0.0.1:{port}/0", DIGITQ_HOME=str(tmp_path))
    env.pop("DIGITQ_RESULT_BACKEND", None)
    scans, out = _scans(tmp_path)
    proc = run_cli(["predict", str(scans), "-o", str(out / "wp.csv")], env)
    line = assert_one_line_error(proc, "redis://***@127.0.0.1", code=1)
    assert "wrong" not in line
    assert sorted(os.listdir(out)) == []


@pytest.mark.slow
def test_the_embedded_worker_takes_the_settings_of_the_command_that_queues_work(home, data_dir, tmp_path):
    """Friction 1: a stack started by a read-only command without DIGITQ_DATA_DIR, then a submit
    that sets it: the idle worker is restarted with the submitting command's data location, says
    so, and the job trains on it (it used to fail with "MNIST file ... missing")."""
    empty = tmp_path / "empty-data"
    empty.mkdir()
    started_by_jobs = dict(os.environ, DIGITQ_DATA_DIR=str(empty))
    submitting = dict(os.environ, DIGITQ_DATA_DIR=str(data_dir))
    try:
        assert run_cli(["local", "up"], started_by_jobs, timeout=180).returncode == 0
        st = json.loads(run_cli(["local", "status", "--json"], started_by_jobs).stdout)
        assert st["worker"]["settings"]["DIGITQ_DATA_DIR"] == str(empty)

        proc = run_cli(["submit-train", "--epochs", "1", "--train-size", "500", "--validation-size", "100",
                        "--test-size", "100", "--batch-size", "32", "--json"], submitting, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (f"restarted the embedded worker with this command's settings: DIGITQ_DATA_DIR={empty} "
                f"(this command: {data_dir})") in proc.stderr
        assert json.loads(proc.stdout)["state"] == "SUCCESS"
        st = json.loads(run_cli(["local", "status", "--json"], submitting).stdout)
        assert st["worker"]["settings"]["DIGITQ_DATA_DIR"] == str(data_dir)

        # A read-only command with other settings uses the stack as it runs: no restart.
        proc = run_cli(["jobs", "--json"], started_by_jobs)
        assert proc.returncode == 0 and "restarted" not in proc.stderr
    finally:
        run_cli(["local", "down"], submitting)
