"""Peak memory of `digitq predict` on a large folder: client and worker stay bounded.

    python bench/predict_memory.py -n 100000          # writes N PNGs (MNIST test digits, repeated)

Starts an embedded stack in a temporary DIGITQ_HOME, trains a small model, classifies the
folder, and reports the client's peak RSS (from /proc, sampled) and the worker's (VmHWM), next
to the size of the images as decoded arrays. Not a test: a measurement for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "predict_memory.json"))
    args = ap.parse_args()
    from PIL import Image

    home = Path(tempfile.mkdtemp(prefix="digitq-mem-"))
    folder = home / "images"
    folder.mkdir()
    raw = gzip.open(Path(args.data_dir) / "mnist" / "t10k-images-idx3-ubyte.gz").read()
    digits = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    t0 = time.time()
    for i in range(args.n):
        Image.fromarray(255 - digits[i % len(digits)]).save(folder / f"{i:07d}.png")
    print(f"wrote {args.n} PNGs in {time.time() - t0:.0f} s")
    env = dict(os.environ, DIGITQ_HOME=str(home), DIGITQ_DATA_DIR=str(Path(args.data_dir).resolve()))
    env.pop("DIGITQ_BROKER_URL", None)
    cli = [sys.executable, "-m", "digitq.client"]
    try:
        subprocess.run(cli + ["submit-train", "--epochs", "1", "--train-size", "5000", "--validation-size", "500",
                              "--test-size", "500", "--json"], env=env, check=True, capture_output=True)
        worker_pid = int((home / "local" / "worker.pid").read_text())
        t0 = time.time()
        proc = subprocess.Popen(cli + ["predict", str(folder), "-o", str(home / "out.csv"), "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peak_client = 0
        while proc.poll() is None:
            # the client and its preprocessing pool
            kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            peak_client = max(peak_client, rss_kb(proc.pid) + sum(rss_kb(int(k)) for k in kids))
            time.sleep(0.2)
        summary = json.loads(proc.stdout.read())
        rows = sum(1 for _ in open(home / "out.csv")) - 1
        result = {
            "images": args.n, "rows": rows, "classified": summary["classified"], "seconds": round(time.time() - t0, 1),
            "client_peak_rss_mb": round(peak_client / 1024, 1),
            "worker_peak_rss_mb": round(rss_kb(worker_pid, "VmHWM") / 1024, 1),
            "decoded_arrays_mb": round(args.n * 784 / 2**20, 1),
            "float32_arrays_mb": round(args.n * 784 * 4 / 2**20, 1),
        }
    finally:
        subprocess.run(cli + ["local", "down"], env=env, capture_output=True)
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
