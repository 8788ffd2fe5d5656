"""Fault to resumption when the Redis master dies under Sentinel (issue 16), without workers:
a master, a replica and three sentinels on loopback ports (down-after-milliseconds 1000), and
digitq's own Redis client (digitq.common.redis_client.make_redis) writing every 20 ms. After
`kill -9` of the master it reports, per run: when the sentinels name the new master, and when
the client's next write succeeded (the write blocks in its retries meanwhile).

    python bench/redis_failover.py --runs 3

The end-to-end figure with workers (a training job reporting progress again, a predict run
going on) is printed by tests/integration/test_redis_faults.py::test_sentinel_failover_... (-s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_run(folder: Path) -> tuple[float, float]:
    from digitq.common.redis_client import make_redis
    from digitq.common.settings import load_settings
    from tests.processes import SentinelCluster

    cluster = SentinelCluster(folder)
    cluster.start()
    try:
        os.environ.update(cluster.env())
        r = make_redis(cluster.url, load_settings(), socket_timeout=2)
        for i in range(20):
            r.set("bench:n", i)
            time.sleep(0.02)
        import threading

        old = cluster.master.port
        seen = {}

        def watch():
            while cluster.master_port() in (None, old):
                time.sleep(0.02)
            seen["promoted"] = time.monotonic() - killed

        cluster.master.kill()
        killed = time.monotonic()
        watcher = threading.Thread(target=watch)
        watcher.start()
        r.set("bench:n", -1)  # blocks in its retries until the new master takes it
        written = time.monotonic() - killed
        watcher.join()
        return seen["promoted"], written
    finally:
        cluster.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            promoted, written = one_run(Path(d))
        rows.append((promoted, written))
        print(f"run {i + 1}: master named after {promoted:.2f} s, first write on it after {written:.2f} s")
    print(f"median: named {statistics.median(r[0] for r in rows):.2f} s, "
          f"written {statistics.median(r[1] for r in rows):.2f} s")


if __name__ == "__main__":
    main()
