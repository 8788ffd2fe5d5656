"""Jobs through a real redis-server and a real worker process, driven by the real CLI."""

import json

import pytest

from digitq.client.api import Client
from digitq.common.names import TRAIN_TASK
from tests import helpers
from tests.helpers import training_starts, wait_for
from tests.processes import run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SMALL = ["--epochs", "1", "--train-size", "2000", "--validation-size", "200", "--test-size", "500", "--batch-size", "32"]
TINY = ["--epochs", "1", "--train-size", "300", "--validation-size", "100", "--test-size", "100", "--batch-size", "32"]
"""The smallest job: proof that a worker still serves."""


def assert_one_line_error(proc, *fragments):
    """One `error: ...` line on stderr, after at most a `submitted ...` line."""
    return helpers.assert_one_line_error(proc, *fragments, after_submitted=True)


def test_train_job_through_the_queue(trained_model, client_env):
    """The session's model was trained by `digitq submit-train --json` on the shared worker."""
    res = trained_model.result
    for key in ("job_id", "state", "test_accuracy", "test_loss", "epochs", "model", "wall_seconds"):
        assert key in res
    assert res["state"] == "SUCCESS" and res["epochs"] == 1 and res["replicas"] == 2
    assert res["model"] == f"{trained_model.name}:1" and 0.5 < res["test_accuracy"] <= 1.0

    st = json.loads(run_cli(["status", res["job_id"], "--json"], client_env).stdout)
    assert st["state"] == "SUCCESS" and st["test_accuracy"] == res["test_accuracy"]
    again = json.loads(run_cli(["wait", res["job_id"], "--json"], client_env).stdout)
    assert again["model"] == res["model"]
    listed = json.loads(run_cli(["jobs", "--json"], client_env).stdout)
    assert res["job_id"] in [j["job_id"] for j in listed]
    human = run_cli(["status", res["job_id"]], client_env)
    assert "test accuracy" in human.stdout and "SUCCESS" in human.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--arch", "resnet"], "unknown arch 'resnet'"),
        (["--epochs", "0"], "epochs must be between 1"),
        (["--lr", "0"], "learning_rate must be > 0"),
        (["--lr", "-0.1"], "learning_rate must be > 0"),
        (["--conv-channels", "32,x"], "--conv-channels takes whole numbers"),
        (["--name", "a/b"], "invalid model name"),
        (["--elastic", "--no-augment"], "--elastic adds to --augment's transform"),
    ],
)
def test_bad_parameters_fail_at_once_with_one_line(args, fragment, client_env):
    assert_one_line_error(run_cli(["submit-train", *args], client_env), fragment)


def test_unreachable_broker_is_one_line(client_env):
    env = dict(client_env, DIGITQ_BROKER_URL="redis://:pw@127.0.0.1:1/0")
    proc = run_cli(["submit-train", "--epochs", "1"], env, timeout=60)
    assert_one_line_error(proc, "cannot reach the broker at redis://***@127.0.0.1:1/0")
    assert "pw" not in proc.stderr


def test_unknown_job_is_one_line(client_env):
    assert_one_line_error(run_cli(["status", "0123abc"], client_env), "no job 0123abc")
    assert_one_line_error(run_cli(["status", "../../etc"], client_env), "invalid job id")


def test_hand_made_bad_messages_fail_with_a_reason_and_the_worker_keeps_serving(shared_worker, client_env):
    client = Client(client_env["DIGITQ_BROKER_URL"])
    bad = {"epochs": "many", "surprise": 1}
    r1 = client.app.send_task(TRAIN_TASK, args=[bad], queue="train")
    r2 = client.app.send_task(TRAIN_TASK, args=[{"dataset": "/etc", "epochs": 1}], queue="train")
    for r, fragment in ((r1, "unknown field(s) in TrainRequest: surprise"), (r2, "outside the worker's allowed roots")):
        # sent by hand: unknown to `status` until it has a state
        wait_for(lambda: client._meta(r.id) is not None and client.status(r.id).state in ("FAILURE", "SUCCESS"),
                 120, f"hand-made message {r.id} to end")
        st = client.status(r.id)
        assert st.state == "FAILURE" and fragment in st.error
    proc = run_cli(["submit-train", *TINY, "--json"], client_env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["state"] == "SUCCESS"


def test_missing_dataset_folder_fails_the_job_with_one_line(shared_worker, client_env, shared_home):
    proc = run_cli(["submit-train", "--dataset", str(shared_home / "no-such-folder"), "--epochs", "1", "--wait"],
                   client_env)
    assert_one_line_error(proc, "failed", "does not exist")


def test_cancel_a_running_job_frees_the_worker(shared_worker, client_env):
    client = Client(client_env["DIGITQ_BROKER_URL"])
    job = run_cli(["submit-train", "--epochs", "20", "--train-size", "20000", "--validation-size", "200",
                   "--test-size", "200"], client_env).stdout.strip()
    wait_for(lambda: (client.status(job).progress or {}).get("phase") == "train", 120, "training")
    proc = run_cli(["cancel", job], client_env)
    assert proc.returncode == 0
    wait_for(lambda: client.status(job).state == "REVOKED", 30, "the job to stop")
    waited = run_cli(["wait", job], client_env)
    assert_one_line_error(waited, "was cancelled")
    nxt = run_cli(["submit-train", *TINY, "--json"], client_env)
    assert json.loads(nxt.stdout)["state"] == "SUCCESS"
    assert client.status(job).state == "REVOKED"


def test_cancel_a_queued_job_never_runs_it(shared_worker, client_env):
    client = Client(client_env["DIGITQ_BROKER_URL"])
    first = run_cli(["submit-train", *SMALL], client_env).stdout.strip()
    queued = run_cli(["submit-train", *TINY], client_env).stdout.strip()
    assert run_cli(["cancel", queued], client_env).returncode == 0
    client.wait(first, timeout=300)
    # Next the worker takes the queued message and drops it (Celery's revoke, or digitq's flag).
    wait_for(lambda: f"Discarding revoked task: digitq.train[{queued}]" in shared_worker.log()
             or f"job {queued} cancelled" in shared_worker.log(), 60, "the worker to drop the cancelled job")
    assert client.status(queued).state == "REVOKED"
    starts = training_starts(client.redis, queued)
    assert not starts, "the cancelled job was trained"
