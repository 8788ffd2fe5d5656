"""Redis faults, injected for real (issue 16): a full Redis (maxmemory, noeviction), an evicting
policy, Redis restarted empty and no live worker during `digitq predict`, SIGTERM to the client,
a full output disk, a worker on the wrong volume, and a Sentinel failover (kill -9 the master).

Each test states what a user is promised (README "Guarantees"). The client-side tests answer
predict chunks with `ChunkAnswerer`, a stand-in worker thread that reads the real messages from
the real redis-server (no TensorFlow), so that they stay fast; the others run real workers.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from digitq.client.api import Client
from digitq.common.celery_keys import task_meta_key
from digitq.common.names import JOBS_INDEX_KEY, PREDICT_QUEUE, worker_key
from digitq.common.registry import list_models, register_model
from tests.helpers import assert_one_line_error, mnist_test, ok, wait_for
from tests.processes import RedisServer, SentinelCluster, WorkerProcess, run_cli

pytestmark = [pytest.mark.redis]

FAST = {"DIGITQ_VISIBILITY_TIMEOUT": "30", "DIGITQ_LEASE_SECONDS": "10"}


def write_images(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return folder


def partials(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")]


def batch_state(r) -> str | None:
    """The state of the newest predict batch in the jobs index."""
    ids = r.zrevrange(JOBS_INDEX_KEY, 0, 0)
    raw = r.get(task_meta_key(ids[0].decode())) if ids else None
    return json.loads(raw)["status"] if raw else None


def stop_group(proc: subprocess.Popen) -> None:
    """Kill a client started in a session of its own and its preprocessing processes, if it still runs
    (a failed test must not leave them behind)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait()


def cli_env(url: str, home: Path, data_dir: Path, **extra) -> dict:
    env = dict(os.environ, DIGITQ_BROKER_URL=url, DIGITQ_HOME=str(home), DIGITQ_DATA_DIR=str(data_dir), **FAST)
    env.pop("DIGITQ_RESULT_BACKEND", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


class ChunkAnswerer(threading.Thread):
    """A stand-in predict worker: announces itself and answers the first `limit` chunk messages
    from the real queue with made-up probabilities (the client's side is what is under test)."""

    def __init__(self, url: str, limit: int = 10**9):
        super().__init__(daemon=True)
        self.url, self.limit, self.answered = url, limit, 0
        self.stop = threading.Event()

    def run(self) -> None:
        import redis

        r = redis.Redis.from_url(self.url, socket_timeout=2)
        info = {"node": "answerer@test", "queues": [PREDICT_QUEUE], "host": "test"}
        while not self.stop.is_set():
            try:
                r.set(worker_key("answerer@test"), json.dumps(info), ex=35)
                got = r.brpop([PREDICT_QUEUE], timeout=0.2)
                if not got or self.answered >= self.limit:
                    continue
                msg = json.loads(got[1])
                payload = json.loads(base64.b64decode(msg["body"]))[0][0]
                count = payload["count"]
                result = {"model": payload["model"], "probs": [[0.1] * 10] * count, "errors": [None] * count}
                r.set(task_meta_key(msg["headers"]["id"]), json.dumps({"status": "SUCCESS", "result": result}))
                self.answered += 1
            except (redis.exceptions.RedisError, OSError):
                time.sleep(0.1)  # Redis restarting: as a worker would, try again


@pytest.fixture
def lone_redis(tmp_path, data_dir):
    """A redis-server without persistence (a restart comes back empty), a home, a registered
    model record (no worker will load it) and a folder of 120 real digit images."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    home = tmp_path / "home"
    home.mkdir()
    register_model(server.client(), "ghost", "0" * 32, {"path": "jobs/none/model.keras", "test_accuracy": 0.5})
    images, _ = mnist_test(data_dir)
    folder = write_images(tmp_path / "digits", images[:120])
    yield server, home, folder
    server.stop()


def test_predict_with_no_live_worker_stops_with_one_line(lone_redis, data_dir, tmp_path):
    """No worker alive during `digitq predict`: one line within DIGITQ_NO_WORKER_TIMEOUT (+ two
    looks, CHECK_EVERY = 2 s apart), no output or partial file, the batch closed as FAILURE."""
    server, home, folder = lone_redis
    out = tmp_path / "out.csv"
    started = time.monotonic()
    proc = run_cli(["predict", str(folder), "--model", "ghost", "-o", str(out), "--chunk-size", "20"],
                   cli_env(server.url, home, data_dir, DIGITQ_NO_WORKER_TIMEOUT=3), timeout=60)
    elapsed = time.monotonic() - started
    assert_one_line_error(proc, "no live worker serves the predict queue", "DIGITQ_NO_WORKER_TIMEOUT", code=1)
    assert elapsed < 30, elapsed
    assert not out.exists() and partials(tmp_path) == []
    assert batch_state(server.client()) == "FAILURE"


def test_redis_restarted_empty_during_predict_stops_with_one_line(lone_redis, data_dir, tmp_path):
    """Redis restarted empty (no persistence) while `digitq predict` writes rows: one line within
    a few seconds (CHECK_EVERY), not a wait of an hour per chunk; no partial file."""
    server, home, folder = lone_redis
    answerer = ChunkAnswerer(server.url, limit=2)
    answerer.start()
    out = tmp_path / "out.csv"
    env = cli_env(server.url, home, data_dir, DIGITQ_NO_WORKER_TIMEOUT=120)
    proc = subprocess.Popen([sys.executable, "-m", "digitq.client", "predict", str(folder), "--model", "ghost",
                             "-o", str(out), "--chunk-size", "20"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: answerer.answered == 2 and partials(tmp_path), 60, "the first rows")
        server.kill()
        server.start()  # same port, no data
        restarted = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        elapsed = time.monotonic() - restarted
    finally:
        answerer.stop.set()
        stop_group(proc)
    assert_one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr),
                          "gone from Redis", code=1)
    assert elapsed < 20, elapsed
    assert not out.exists() and partials(tmp_path) == []


def test_wait_says_when_no_worker_serves_the_job_and_when_redis_lost_it(lone_redis, data_dir):
    """`digitq wait` on a queued job with no live worker: one line within DIGITQ_NO_WORKER_TIMEOUT;
    with Redis restarted empty under it: one line that the job is gone, not a wait for good."""
    server, home, _ = lone_redis
    env = cli_env(server.url, home, data_dir, DIGITQ_NO_WORKER_TIMEOUT=3)
    job = ok(run_cli(["submit-train", "--epochs", "1"], env)).stdout.split()[-1]
    assert_one_line_error(run_cli(["wait", job], env, timeout=60), "no live worker serves the train queue", code=1)
    env["DIGITQ_NO_WORKER_TIMEOUT"] = "120"
    proc = subprocess.Popen([sys.executable, "-m", "digitq.client", "wait", job], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(3)
        server.kill()
        server.start()
        _, stderr = proc.communicate(timeout=60)
    finally:
        stop_group(proc)
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and len(lines) == 1 and "is gone from Redis" in lines[0], stderr
    assert "Traceback" not in stderr


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].splitlines()[0]
    except (OSError, IndexError):
        return "zombie"  # gone


def test_sigterm_to_predict_is_as_clean_as_ctrl_c(lone_redis, data_dir, tmp_path):
    """SIGTERM (what `docker stop` and `timeout` send) mid-run: exit 143 with one line, no partial
    file, no orphaned preprocessing process, the batch closed as FAILURE."""
    server, home, folder = lone_redis
    answerer = ChunkAnswerer(server.url, limit=2)
    answerer.start()
    out = tmp_path / "out.csv"
    proc = subprocess.Popen([sys.executable, "-m", "digitq.client", "predict", str(folder), "--model", "ghost",
                             "-o", str(out), "--chunk-size", "20", "--jobs", "2"],
                            env=cli_env(server.url, home, data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        wait_for(lambda: answerer.answered == 2 and partials(tmp_path), 60, "the first rows")
        children = _children(proc.pid)
        assert children, "predict --jobs 2 preprocesses in processes of its own"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        # before the clean-up below, which would kill what the client left behind
        wait_for(lambda: not any(Path(f"/proc/{c}").exists() and "zombie" not in _state(c) for c in children), 10,
                 "the preprocessing processes to exit")
    finally:
        answerer.stop.set()
        stop_group(proc)
    assert proc.returncode == 143, (proc.returncode, stderr)
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "terminated", stderr
    assert not out.exists() and partials(tmp_path) == []
    assert batch_state(server.client()) == "FAILURE"


def test_a_full_output_disk_is_one_line_and_leaves_no_partial_file(lone_redis, data_dir, tmp_path):
    """The output cannot be written whole (here a 2 KB file-size limit, as a full disk would
    refuse): one line, no partial file, the batch closed as FAILURE."""
    server, home, folder = lone_redis
    answerer = ChunkAnswerer(server.url)
    answerer.start()
    out = tmp_path / "out.csv"

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    try:
        proc = subprocess.run([sys.executable, "-m", "digitq.client", "predict", str(folder), "--model", "ghost",
                               "-o", str(out), "--chunk-size", "20", "--jobs", "1"],
                              env=cli_env(server.url, home, data_dir), capture_output=True, text=True, timeout=60,
                              preexec_fn=small_files)
    finally:
        answerer.stop.set()
    assert_one_line_error(proc, f"cannot write {out}", code=1)
    assert not out.exists() and partials(tmp_path) == []
    assert batch_state(server.client()) == "FAILURE"


def test_an_evicting_policy_is_said_at_client_start(lone_redis):
    """maxmemory-policy allkeys-lru would drop jobs silently when Redis is full: say so."""
    server, _, _ = lone_redis
    server.client().config_set("maxmemory-policy", "allkeys-lru")
    notes = []
    Client(server.url, notify=notes.append).connect()
    assert len(notes) == 1 and "maxmemory-policy is allkeys-lru" in notes[0] and "noeviction" in notes[0]
    server.client().config_set("maxmemory-policy", "noeviction")
    notes.clear()
    Client(server.url, notify=notes.append).connect()
    assert notes == []


# --- a real worker: Redis full, the wrong volume ------------------------------------------------


@pytest.fixture(scope="module")
def full_stack(tmp_path_factory, data_dir):
    """A redis-server started with an evicting policy (the worker must warn at start), then set
    right (noeviction), and a real worker on it."""
    base = tmp_path_factory.mktemp("full")
    server = RedisServer(base / "redis", extra_args=("--maxmemory-policy", "allkeys-lru"))
    server.start()
    home = base / "home"
    worker = WorkerProcess(server.url, home, data_dir, name="w1", cpu_replicas=1, extra_env=FAST)
    worker.start()
    try:
        images, _ = mnist_test(data_dir)
        folder = write_images(base / "digits", images[:3000])
        worker.wait_ready()
        server.client().config_set("maxmemory-policy", "noeviction")
        register_model(server.client(), "kept", "1" * 32, {"path": "jobs/none/model.keras"})  # must survive
        yield SimpleNamespace(server=server, worker=worker, home=home, folder=folder,
                              env=cli_env(server.url, home, data_dir))
    finally:
        worker.kill()
        server.stop()


@pytest.fixture(scope="module")
def squeezed(full_stack):
    """Redis becomes full (maxmemory) while a job trains, for as long as it takes the job to
    reach its end; then memory is freed. What was seen on the way."""
    st = full_stack
    r = st.server.client()
    job = ok(run_cli(["submit-train", "--name", "squeezed", "--epochs", "1", "--train-size", "1000",
                      "--validation-size", "100", "--test-size", "100", "--batch-size", "32"], st.env)).stdout.split()[-1]
    wait_for(lambda: (json.loads(r.get(task_meta_key(job)) or "{}").get("status") == "PROGRESS"), 120, "progress")
    r.config_set("maxmemory", 1)
    try:
        refused = run_cli(["submit-train", "--name", "refused", "--epochs", "1"], st.env)
        wait_for(lambda: " waits" in st.worker.log() and "Redis is full" in st.worker.log(), 180,
                 "the job's end to wait for room")
        time.sleep(2)
        alive_while_full = st.worker.proc.poll() is None
        models_while_full = sorted(m["name"] for m in list_models(r))
    finally:
        r.config_set("maxmemory", 0)
    res = Client(st.server.url).wait(job, timeout=240)
    return SimpleNamespace(job=job, refused=refused, alive_while_full=alive_while_full,
                           models_while_full=models_while_full, result=res)


@pytest.mark.slow
def test_worker_warns_of_an_evicting_policy_at_start(full_stack):
    assert "maxmemory-policy is allkeys-lru" in full_stack.worker.log()


@pytest.mark.slow
def test_maxmemory_during_training_no_worker_exit_nothing_lost(full_stack, squeezed):
    """Redis full while a job trains: submitting is refused with one line ("Redis is full", not
    "broker unavailable"), the worker never exits (Celery's consumer used to die on the final
    state's write), the registry is intact, and once there is room the job ends SUCCESS with one
    model version."""
    assert_one_line_error(squeezed.refused, "Redis is full", code=1)
    assert squeezed.alive_while_full, "the worker exited"
    assert squeezed.models_while_full == ["kept"], "the registry is intact"
    assert squeezed.result["state"] == "SUCCESS"
    r = full_stack.server.client()
    assert sorted((m["name"], m["version"]) for m in list_models(r))[0] == ("kept", 1)
    assert [m["name"] for m in list_models(r)].count("squeezed") == 1, "one model version for the job"
    assert full_stack.worker.proc.poll() is None


@pytest.mark.slow
def test_maxmemory_during_predict_is_one_line_and_loses_nothing(full_stack, squeezed, tmp_path):
    """Redis full while `digitq predict` runs: one line that says Redis is full (not 'broker
    unavailable'), no partial file; the worker stays up and the registry is intact; once there is
    room the same predict runs through, and leaves no chunk result or pixels in Redis."""
    st = full_stack
    r = st.server.client()
    model = squeezed.result["model"]
    out = tmp_path / "out.csv"
    proc = subprocess.Popen([sys.executable, "-m", "digitq.client", "predict", str(st.folder), "--model", model,
                             "-o", str(out), "--chunk-size", "5"], env=st.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: partials(tmp_path) or proc.poll() is not None, 120, "the first rows")
        r.config_set("maxmemory", 1)
        _, stderr = proc.communicate(timeout=120)
    finally:
        r.config_set("maxmemory", 0)
        stop_group(proc)
    assert_one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr), "Redis is full",
                          code=1)
    assert not out.exists() and partials(tmp_path) == []
    assert st.worker.proc.poll() is None, "the worker exited"
    assert sorted(m["name"] for m in list_models(r)) == ["kept", "squeezed"]
    ok(run_cli(["predict", str(st.folder), "--model", model, "-o", str(out), "--chunk-size", "500"], st.env,
               timeout=120))
    assert len(out.read_text().splitlines()) == 3001
    # what the run kept in Redis is gone once read: its chunks' results and pixels
    batch = r.zrevrange(JOBS_INDEX_KEY, 0, 0)[0].decode()
    assert r.get(task_meta_key(batch)) and not list(r.scan_iter(f"celery-task-meta-{batch}-*"))
    assert not list(r.scan_iter(f"digitq:pixels:{batch}-*"))


@pytest.mark.slow
def test_a_worker_on_another_volume_refuses_to_start(full_stack, tmp_path, data_dir):
    """A worker whose DIGITQ_HOME is not the shared volume the live workers use would fail every
    job it takes: it refuses to start, with one line."""
    home = full_stack.home
    stranger = WorkerProcess(full_stack.server.url, tmp_path / "elsewhere", data_dir, name="w2", cpu_replicas=1,
                             queues="predict", extra_env=FAST)
    stranger.start()
    try:
        stranger.proc.wait(timeout=120)
    finally:
        stranger.kill()
    assert stranger.proc.returncode == 78  # EX_CONFIG
    assert "is not the shared volume the other workers use" in stranger.log()
    assert (home / ".digitq-volume-id").exists()


# --- Sentinel: kill -9 the master ------------------------------------------------------------


@pytest.mark.slow
def test_sentinel_failover_loses_nothing_and_trains_nothing_twice(tmp_path, data_dir, monkeypatch):
    """kill -9 the Redis master while one job trains, two are queued and a `digitq predict` of
    3,000 images runs: Sentinel promotes the replica; all three jobs complete, each trained once
    with one model version, and the predict output is complete (or one line, no partial file)."""
    cluster = SentinelCluster(tmp_path / "sentinel")
    cluster.start()
    for k, v in cluster.env().items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "home"
    extra = {**FAST, **cluster.env()}
    trainer = WorkerProcess(cluster.url, home, data_dir, name="t1", cpu_replicas=1, queues="train", extra_env=extra)
    predictor = WorkerProcess(cluster.url, home, data_dir, name="p1", cpu_replicas=1, queues="predict",
                              extra_env=extra)
    env = cli_env(cluster.url, home, data_dir, **cluster.env())
    images, _ = mnist_test(data_dir)
    folder = write_images(tmp_path / "digits", images[:3000])
    out = tmp_path / "out.csv"
    predict = None
    try:
        trainer.start()
        predictor.start()
        trainer.wait_ready()
        predictor.wait_ready()
        small = ["--train-size", "1000", "--validation-size", "100", "--test-size", "100", "--batch-size", "32"]
        ok(run_cli(["submit-train", "--json", "--name", "first", "--epochs", "1", *small], env, timeout=300))
        jobs = [ok(run_cli(["submit-train", "--name", f"job{i}", "--epochs", "2" if i == 0 else "1", *small],
                           env)).stdout.split()[-1] for i in range(3)]
        client = Client(cluster.url)
        wait_for(lambda: client.status(jobs[0]).state == "PROGRESS", 120, "the first job to train")
        predict = subprocess.Popen([sys.executable, "-m", "digitq.client", "predict", str(folder), "--model", "first",
                                    "-o", str(out), "--chunk-size", "50"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        wait_for(lambda: partials(tmp_path) or predict.poll() is not None, 120, "the first predicted rows")
        old_master = cluster.master.port
        before = client.status(jobs[0]).progress
        cluster.master.kill()
        killed = time.monotonic()
        wait_for(lambda: cluster.master_port() not in (None, old_master), 60, "Sentinel to promote the replica")
        promoted = time.monotonic() - killed
        wait_for(lambda: client.status(jobs[0]).progress != before or client.status(jobs[0]).state != "PROGRESS",
                 120, "the training job to report progress again")
        resumed = time.monotonic() - killed
        _, stderr = predict.communicate(timeout=240)
        results = [client.wait(j, timeout=300) for j in jobs]
        r = client.redis
        print(f"\nfailover: replica promoted {promoted:.1f} s after the kill, training progress again after "
              f"{resumed:.1f} s; predict exit {predict.returncode} {stderr.strip()[-300:]}")
        assert [res["state"] for res in results] == ["SUCCESS"] * 3
        versions = sorted((m["name"], m["version"]) for m in list_models(r))
        assert versions == [("first", 1), ("job0", 1), ("job1", 1), ("job2", 1)], versions
        for j, epochs in zip(jobs, ([1, 2], [1], [1])):  # trained once: each epoch once, none resumed
            hist = json.loads((home / "jobs" / j / "history.json").read_text())
            assert [e["epoch"] for e in hist] == epochs, hist
        if predict.returncode == 0:
            assert len(out.read_text().splitlines()) == 3001
        else:
            assert_one_line_error(subprocess.CompletedProcess(predict.args, predict.returncode, "", stderr))
            assert not out.exists()
        assert partials(tmp_path) == []
    finally:
        if predict is not None:
            stop_group(predict)
        trainer.kill()
        predictor.kill()
        cluster.stop()
