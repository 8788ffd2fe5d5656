"""Hand-made queue messages: a worker refuses pickles, non-JSON bodies, wrong shapes and huge
payloads with a reason, executes none of them, and keeps serving."""

import json
import os
import pickle

import pytest
from kombu import Connection, Exchange, Producer

from digitq.client.api import Client
from digitq.common.celery_keys import task_meta_key
from digitq.common.names import TRAIN_TASK
from tests.helpers import wait_for
from tests.processes import run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SMALL = ["--epochs", "1", "--train-size", "300", "--validation-size", "100", "--test-size", "100", "--batch-size", "32"]


class Exploit:
    """Unpickling this runs a shell command: it must never happen on a worker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _final(client, job_id, timeout=120):
    def ended():  # sent by hand: not in the jobs index until it has a state
        return client._meta(job_id) is not None and client.status(job_id).state in ("SUCCESS", "FAILURE", "REVOKED")

    wait_for(ended, timeout, f"job {job_id} to end")
    return client.status(job_id)


def _publish_raw(url, body, content_type, task_id):
    """A message with Celery's protocol-2 headers but a body we choose."""
    with Connection(url) as conn:
        Producer(conn).publish(
            body, exchange=Exchange("train", type="direct"), routing_key="train", content_type=content_type,
            content_encoding="binary" if isinstance(body, bytes) else "utf-8",
            headers={"lang": "py", "task": TRAIN_TASK, "id": task_id, "root_id": task_id, "parent_id": None,
                     "group": None, "argsrepr": "", "kwargsrepr": "", "origin": "test", "retries": 0},
        )


def test_pickled_and_non_json_messages_are_refused_never_executed(shared_worker, client_env, tmp_path):
    url = client_env["DIGITQ_BROKER_URL"]
    marker = tmp_path / "pwned"
    payload = pickle.dumps(((Exploit(marker),), {}, {"callbacks": None, "errbacks": None, "chain": None,
                                                    "chord": None}))
    _publish_raw(url, payload, "application/x-python-serialize", "pickled-job-1")
    _publish_raw(url, "{this is not json", "application/json", "garbled-job-1")
    proc = run_cli(["submit-train", *SMALL, "--json"], client_env)  # the worker serves on
    assert proc.returncode == 0 and json.loads(proc.stdout)["state"] == "SUCCESS"
    log = shared_worker.log()
    assert "pickle" in log and ("Refusing" in log or "refused" in log.lower())
    assert not marker.exists(), "a pickled message was executed"
    client = Client(url)
    assert client._meta("pickled-job-1") is None or client.status("pickled-job-1").state != "SUCCESS"


@pytest.mark.parametrize(
    "args, kwargs, fragment",
    [
        ([], {}, "exactly one JSON object"),
        ([{"epochs": 1}, {"epochs": 2}], {}, "exactly one JSON object"),
        ([{"epochs": 1}], {"extra": 1}, "exactly one JSON object"),
        (["a string"], {}, "must be a JSON object"),
        ([{"arch": "cnn", "epochs": 1, "dataset": "x" * (17 * 1024 * 1024)}], {}, "job message too large"),
        ([{"epochs": 1, "name": "../../etc"}], {}, "invalid model name"),
        ([{"epochs": 1, "dataset": "../../../../etc"}], {}, "outside the worker's allowed roots"),
    ],
)
def test_malformed_messages_fail_with_a_reason(shared_worker, client_env, args, kwargs, fragment):
    client = Client(client_env["DIGITQ_BROKER_URL"])
    r = client.app.send_task(TRAIN_TASK, args=args, kwargs=kwargs, queue="train")
    st = _final(client, r.id)
    assert st.state == "FAILURE", st
    assert fragment in st.error and "\n" not in st.error


def test_job_ids_with_path_parts_are_refused(shared_worker, client_env, shared_home):
    client = Client(client_env["DIGITQ_BROKER_URL"])
    client.app.send_task(TRAIN_TASK, args=[{"epochs": 1}], task_id="../escape", queue="train")
    wait_for(lambda: b'"FAILURE"' in (client.redis.get(task_meta_key("../escape")) or b""), 120, "the failure")
    meta = json.loads(client.redis.get(task_meta_key("../escape")))
    assert meta["status"] == "FAILURE" and "invalid job id" in json.dumps(meta["result"])
    assert not (shared_home / "escape").exists() and not (shared_home.parent / "escape").exists()
