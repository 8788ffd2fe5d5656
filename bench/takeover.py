"""Time from a training worker's death to its job's resumption on another worker, with the
default settings (lease 30 s, takeover sweep every 5 s, visibility timeout 300 s).

    .venv/bin/python bench/takeover.py --rounds 3      # ~1.5 min per round on 2 cores

Starts a redis-server and two workers (tests/processes.py) in a temporary DIGITQ_HOME. Each
round submits a small job, waits for its first epoch, `kill -9`s the worker holding its lease,
and times until the other worker holds the lease (the job resumed there) and until that worker
reports progress; then cancels the job and restarts the killed worker. Not a test: the
measurement behind README's fault table (issue 16 asks for resumption within 90 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from digitq.client.api import Client  # noqa: E402
from digitq.common.names import lease_key  # noqa: E402
from digitq.common.schemas import TrainRequest  # noqa: E402
from tests.processes import RedisServer, WorkerProcess  # noqa: E402


def holder_pid(r, job_id: str) -> int | None:
    v = r.get(lease_key(job_id))
    return int(v.decode().rsplit(":", 1)[1]) if v else None


def wait(pred, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("gave up waiting")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data-dir", default=os.environ.get("DIGITQ_DATA_DIR") or str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "takeover.json"))
    args = ap.parse_args()
    for k in ("DIGITQ_LEASE_SECONDS", "DIGITQ_VISIBILITY_TIMEOUT"):
        os.environ.pop(k, None)  # the defaults are what is measured
    root = Path(tempfile.mkdtemp(prefix="digitq-takeover-"))
    server = RedisServer(root / "redis")
    server.start()
    home = root / "home"
    os.environ.update(DIGITQ_HOME=str(home), DIGITQ_BROKER_URL=server.url, DIGITQ_DATA_DIR=args.data_dir)
    workers = [WorkerProcess(server.url, home, Path(args.data_dir), name=n) for n in ("w1", "w2")]
    for w in workers:
        w.start()
    for w in workers:
        w.wait_ready()
    client, r = Client(server.url), server.client()
    rounds = []
    try:
        for i in range(args.rounds):
            req = TrainRequest(name=f"takeover{i}", arch="mlp", epochs=50, train_size=3000, validation_size=200,
                               test_size=300, batch_size=32)
            job = client.submit_train(req)
            wait(lambda: (client.status(job).progress or {}).get("epoch", 0) >= 2, 300)  # epoch 1 is backed up
            victim = next(w for w in workers if w.proc.pid == holder_pid(r, job))
            survivor = next(w for w in workers if w is not victim)
            ttl = r.ttl(lease_key(job))
            victim.kill()
            killed = time.monotonic()
            wait(lambda: holder_pid(r, job) == survivor.proc.pid, 600)
            resumed = time.monotonic() - killed
            before = client.status(job).progress or {}
            wait(lambda: (client.status(job).progress or {}) != before and
                 (client.status(job).progress or {}).get("phase") == "train", 600)
            training = time.monotonic() - killed
            rounds.append({"round": i + 1, "lease_ttl_left_at_kill_s": ttl, "kill_to_resumed_s": round(resumed, 1),
                           "kill_to_training_s": round(training, 1)})
            print(json.dumps(rounds[-1]), flush=True)
            client.cancel(job)
            victim.start()
            victim.wait_ready()
    finally:
        for w in workers:
            w.kill()
        server.stop()
    summary = {
        "settings": {"lease_s": 30, "sweep_s": 5, "visibility_timeout_s": 300},
        "rounds": rounds,
        "kill_to_resumed_s": {"median": statistics.median(x["kill_to_resumed_s"] for x in rounds),
                              "max": max(x["kill_to_resumed_s"] for x in rounds)},
        "kill_to_training_s": {"median": statistics.median(x["kill_to_training_s"] for x in rounds),
                               "max": max(x["kill_to_training_s"] for x in rounds)},
        "load_average_1min": os.getloadavg()[0],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
